"""The console's own defences, proven in the browser: the CSP stops injected inline script and other
origins, and base-model names cannot walk out of the weights folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.helpers import API, ServerProcess


@pytest.mark.browser
def test_the_csp_blocks_injected_inline_script_and_foreign_origins(
    page: Page, server: ServerProcess, watched: dict[str, list[str]]
) -> None:
    page.goto(server.url + "/")
    expect(page.get_by_test_id("setup-form")).to_be_visible()
    result = page.evaluate(
        """async () => {
          const violations = [];
          document.addEventListener('securitypolicyviolation', (e) => violations.push(e.violatedDirective));
          const inline = document.createElement('script');
          inline.textContent = 'window.__injected = true;';
          document.body.append(inline);                      // what an XSS would add
          const handler = document.createElement('img');
          handler.setAttribute('src', 'data:,');
          handler.setAttribute('onerror', 'window.__handler = true');
          document.body.append(handler);
          const foreign = document.createElement('script');
          foreign.src = 'http://203.0.113.7/evil.js';        // another origin
          document.body.append(foreign);
          let fetched = 'blocked';
          try { await fetch('http://203.0.113.7/x', { mode: 'no-cors' }); fetched = 'sent'; } catch { }
          await new Promise((r) => setTimeout(r, 300));
          return { injected: !!window.__injected, handler: !!window.__handler, violations, fetched };
        }"""
    )
    assert result["injected"] is False and result["handler"] is False
    assert result["fetched"] == "blocked"
    assert {"script-src-elem", "script-src-attr", "connect-src"} <= set(result["violations"]), result
    # The console's own scripts still run (the setup form above was drawn by them).
    watched["errors"].clear()  # the violations above are logged as errors on purpose


def test_a_base_model_name_cannot_leave_the_weights_folder(
    client: Any, admin: dict[str, str], config: Any
) -> None:
    from tests.helpers import create_dataset, upload
    from tests.models import synthetic_jpeg

    outside = config.data_path / "x.pt"
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_bytes(b"not weights")  # a file that exists one level up
    (config.data_path / "weights").mkdir(exist_ok=True)
    dataset = create_dataset(client, admin, classes=["square"])
    added = upload(client, admin, dataset["id"], [(f"{n}.jpg", synthetic_jpeg(n)[0]) for n in range(2)])[
        "added"
    ]
    for image in added:
        box = {"class_id": 0, "x1": 1, "y1": 1, "x2": 20, "y2": 20}
        client.put(
            f"{API}/images/{image['id']}/annotations", json={"version": 0, "boxes": [box]}, headers=admin
        )
    for name in ("weights:../x.pt", "weights:/etc/passwd.pt", "weights:..%2Fx.pt", "weights:.hidden.pt"):
        response = client.post(
            f"{API}/training-jobs", json={"dataset_id": dataset["id"], "base_model": name}, headers=admin
        )
        assert response.status_code == 422 and "no weights file" in response.json()["detail"], (
            name,
            response.text,
        )
    assert client.get(f"{API}/training-jobs", headers=admin).json() == []
    assert Path(outside).read_bytes() == b"not weights"
