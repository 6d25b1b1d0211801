// The submit handling the console's forms share: the page does not reload, the form's error line is cleared,
// its button is held while the request runs, and a failed request puts the API's reason in the error line.

import { ApiError } from '../api.js';

/**
 * onSubmit(form, {error, send, button, check, onError, holdOnSuccess})
 * `check()` may return a message: it is shown and nothing is sent. Otherwise `button` (if any) is disabled while
 * `send()` runs; a failure shows its reason in `error`, gives the button back, then calls `onError(err)`. After a
 * success the button comes back too, unless `holdOnSuccess` (a form whose success leaves the page).
 */
export function onSubmit(form, { error, send, button = null, check = null, onError = null, holdOnSuccess = false }) {
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    const problem = check ? check() : '';
    if (problem) {
      error.textContent = problem;
      return;
    }
    if (button) button.disabled = true;
    try {
      await send();
      if (button && !holdOnSuccess) button.disabled = false;
    } catch (err) {
      error.textContent = err instanceof ApiError ? err.detail : String(err);
      if (button) button.disabled = false;
      if (onError) onError(err);
    }
  });
}
