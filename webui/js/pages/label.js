// The labeling page: one image at a time on a canvas, keyboard-driven, autosaved with the annotation version.
// This module only assembles the parts in webui/js/labeling/: panels.js (layout), canvas/ (the drawing tool),
// navigation.js (which image), saving.js (autosave, drafts, conflicts), keys.js, suggestions.js (pre-labeling).

import { api, errorText } from '../api.js';
import { confirmDialog, toast } from '../dom.js';
import { filterFromQuery, getIndex, invalidate } from '../image-index.js';
import { cacheEntry, cachedIds } from '../labeling/cache.js';
import { isPending } from '../labeling/canvas/geometry.js';
import { Labeler } from '../labeling/canvas/labeler.js';
import { bindKeys } from '../labeling/keys.js';
import { createNavigation } from '../labeling/navigation.js';
import { createPanels } from '../labeling/panels.js';
import { createSaver } from '../labeling/saving.js';
import { createSuggestions } from '../labeling/suggestions.js';
import { boxFromQuery, createFocus } from '../labeling/focus.js';

export default {
  route: '#/datasets/:id/label/:imageId',
  title: 'Label',
  async render(root, params, ctx) {
    const datasetId = Number(params.id);
    const filter = filterFromQuery(ctx.query);
    const filterQuery = api.qs({ status: filter.status, class: filter.class_id });
    const index = getIndex(datasetId, filter, { fresh: true });
    // A deep link: the image, its boxes and the page of the list around it load with the dataset.
    const linked = Number(params.imageId);
    let located = null;
    if (Number.isInteger(linked) && linked > 0) {
      cacheEntry(linked);
      located = index.ensureId(linked).catch(() => false);
    }
    const dataset = await api.get(`/datasets/${datasetId}`, { signal: ctx.signal });
    const classes = dataset.classes;
    const canWrite = ctx.user.role !== 'viewer';
    ctx.setTitle(`${dataset.name} · label`);
    root.className = 'fill';

    // The image being edited (see saving.js for its fields), the one drawn last, and whether the page is closing.
    const state = { session: null, drawnImageId: null, leaving: false };
    const commands = {}; // what the buttons and keys call: filled in once navigation and saving exist
    const panels = createPanels({ dataset, index, canWrite, commands, labeler: () => labeler });
    root.append(...panels.nodes);
    const labeler = new Labeler(panels.canvas, {
      classes,
      onChange: (reason, restored) => saver.boxesEdited(reason, restored),
      stateOf: () => saver.statusNow(),
      onSelect: () => {
        panels.renderClasses();
        panels.renderBoxes();
      },
      onView: () => panels.showZoom(),
    });
    const saver = createSaver({ datasetId, classes, canWrite, labeler, state, panels });
    const navigation = createNavigation({ datasetId, index, filterQuery, labeler, state, panels, saver });
    Object.assign(commands, {
      go: navigation.go,
      nextUnlabeled: navigation.nextUnlabeled,
      copyPrevious: navigation.copyPrevious,
      markReviewed: saver.markReviewed,
      toggleHelp: panels.toggleHelp,
      helpOpen: panels.helpOpen,
      deleteImage,
    });

    /** Delete the image on screen (after a confirmation) and go on to the next one, or back to the grid. */
    async function deleteImage() {
      const s = state.session;
      if (!s) return;
      const ok = await confirmDialog('Delete this image?',
        `"${s.meta.original_name}" and its ${s.boxes.length} box(es) are removed from the dataset.`);
      if (!ok || state.session !== s) return;
      const pos = index.indexOf(s.id);
      const neighbour = index.at(pos + 1) || (pos > 0 ? index.at(pos - 1) : null);
      clearTimeout(s.timer);
      s.dirty = false;
      try {
        await api.del(`/images/${s.id}`);
      } catch (err) {
        toast(`Not deleted: ${errorText(err)}`, 'error', 6000);
        return;
      }
      invalidate(datasetId);
      toast('Image deleted', 'ok');
      ctx.navigate(neighbour ? `#/datasets/${datasetId}/label/${neighbour.id}${filterQuery}` : `#/datasets/${datasetId}${filterQuery}`);
    }

    // Pre-labeling: proposals of the deployed model.
    const suggestions = canWrite ? createSuggestions({ labeler, imageId: () => state.session && state.session.id }) : null;
    if (suggestions) {
      panels.onBoxesRendered(() => suggestions.refresh());
      panels.actions.insertBefore(suggestions.controls, panels.actions.querySelector('.spacer'));
      panels.side.insertBefore(suggestions.section, panels.side.children[1]);
    }

    // A deep link to one box (?box=x1,y1,x2,y2, from an evaluation): zoomed onto and marked on that image.
    const focus = createFocus(labeler, boxFromQuery(ctx.query), linked, () => state.drawnImageId);

    const unbindKeys = bindKeys({ labeler, commands, canWrite });
    const onBeforeUnload = () => saver.saveOnUnload();
    window.addEventListener('beforeunload', onBeforeUnload);
    const resizeObserver = new ResizeObserver(() => labeler.resize());
    resizeObserver.observe(panels.stage);

    // Read-only view for tests and benchmarks (no behaviour hangs on it).
    const hook = {
      get imageId() { return state.session ? state.session.id : null; },
      get drawnImageId() { return state.drawnImageId; },
      get boxes() { return labeler.boxes.map((b) => ({ ...b })); },
      get zoom() { return labeler.scale; },
      get offset() { return { x: labeler.offsetX, y: labeler.offsetY }; },
      get selected() { return labeler.selected; },
      get activeClass() { return labeler.activeClass; },
      get version() { return state.session ? state.session.version : null; },
      get status() { return state.session ? state.session.status : null; },
      get saveState() { return panels.saveState(); },
      get drawCount() { return labeler.drawCount; },
      get cachedImages() { return cachedIds(); },
      get pending() { return labeler.boxes.filter(isPending).length; },
      get cursor() { return labeler.cursorIntent; },
      get undoDepth() { return labeler.undoStack.length; },
      get focusBox() { return focus.box || null; },
      toClient: (x, y) => labeler.toClient(x, y),
    };
    window.__labeler = Object.freeze(hook);

    labeler.resize();
    panels.renderClasses();

    // --- first image ---
    let startId = params.imageId === 'first' ? null : Number(params.imageId);
    if (startId === null) {
      startId = await navigation.firstImageId({ filtered: Boolean(filter.status) || filter.class_id !== null });
      if (startId === null) panels.showNoImages();
    }
    if (startId !== null && classes.length) {
      await (startId === linked && located ? located : index.ensureId(startId).catch(() => false));
      await navigation.show(startId);
      focus.apply();
    }

    return async () => {
      state.leaving = true;
      unbindKeys();
      window.removeEventListener('beforeunload', onBeforeUnload);
      resizeObserver.disconnect();
      focus.destroy();
      if (suggestions) suggestions.destroy();
      labeler.destroy();
      if (window.__labeler === hook) delete window.__labeler;
      const session = state.session;
      if (session && (session.dirty || session.saving)) {
        try {
          await saver.save(session);
        } catch {
          /* the draft stays in localStorage */
        }
      }
    };
  },
};
