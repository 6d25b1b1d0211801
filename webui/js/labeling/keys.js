// Keyboard shortcuts of the labeling page, and their help table (shown by "?"): keep the two in step.

export const SHORTCUTS = [
  ['Drag on the image', 'draw a box with the active class (also inside or over other boxes)'],
  ['Shift+drag', 'always draw a new box, wherever the drag starts'],
  ['Click a box', 'select it (a new box is not selected)'],
  ['Drag the selected box or any box\'s tag, drag a handle', 'move, resize'],
  ['1 … 9', 'class of the next box; also changes the selected box'],
  ['Enter, X', 'accept, reject the highlighted suggestion (dashed box)'],
  ['Del, Backspace', 'delete the selected box'],
  ['Ctrl+Z, Ctrl+Shift+Z (Ctrl+Y)', 'undo, redo'],
  ['D or →, A or ←', 'next, previous image'],
  ['N', 'next unlabeled image'],
  ['C', 'copy the boxes of the previous image'],
  ['R', 'mark the image as reviewed'],
  ['Wheel, + / -', 'zoom at the cursor, zoom in / out'],
  ['Space+drag, middle button drag', 'pan'],
  ['F, 0', 'fit to screen, actual size (100 %)'],
  ['Esc', 'deselect, cancel, close'],
  ['?', 'this help'],
];

/**
 * Listen for the shortcuts on the document; returns the function that stops listening.
 * commands: { go(step), nextUnlabeled(), copyPrevious(), markReviewed(), toggleHelp(force), helpOpen() }.
 */
export function bindKeys({ labeler, commands, canWrite }) {
  const onKeyDown = (e) => {
    const t = e.target;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.isContentEditable)) return;
    if (document.querySelector('.modal-backdrop')) return;
    const key = e.key;
    const lower = key.length === 1 ? key.toLowerCase() : key;
    const mod = e.ctrlKey || e.metaKey;
    if (mod) {
      if (lower === 'z' && !e.shiftKey) labeler.undo();
      else if ((lower === 'z' && e.shiftKey) || lower === 'y') labeler.redo();
      else return;
      e.preventDefault();
      return;
    }
    if (e.altKey) return;
    if (key === '?') {
      commands.toggleHelp();
    } else if (key === 'Escape') {
      if (commands.helpOpen()) commands.toggleHelp(false);
      else if (labeler.drag) {
        labeler.drag = null;
        labeler.schedule();
      } else labeler.select(-1);
    } else if (key === ' ') {
      labeler.setSpace(true);
    } else if (key === 'Shift') {
      labeler.setShift(true);
      return; // a modifier: the browser keeps its own handling
    } else if (/^[1-9]$/.test(key)) {
      labeler.setClass(Number(key) - 1);
    } else if (key === 'Delete' || key === 'Backspace') {
      labeler.deleteSelected();
    } else if (lower === 'd' || key === 'ArrowRight') {
      commands.go(1);
    } else if (lower === 'a' || key === 'ArrowLeft') {
      commands.go(-1);
    } else if (lower === 'n') {
      commands.nextUnlabeled();
    } else if (lower === 'f') {
      labeler.fit();
    } else if (key === '0') {
      labeler.actualSize();
    } else if (key === '+' || key === '=') {
      labeler.zoomTo(labeler.scale * 1.25);
    } else if (key === '-' || key === '_') {
      labeler.zoomTo(labeler.scale / 1.25);
    } else if (lower === 'c' && canWrite) {
      commands.copyPrevious();
    } else if (lower === 'r' && canWrite) {
      commands.markReviewed();
    } else {
      return;
    }
    e.preventDefault();
  };
  const onKeyUp = (e) => {
    if (e.key === ' ') labeler.setSpace(false);
    if (e.key === 'Shift') labeler.setShift(false);
  };
  // A key released in another window never reaches us: leave pan and draw modes when the window loses focus.
  const onBlur = () => {
    labeler.setSpace(false);
    labeler.setShift(false);
  };
  document.addEventListener('keydown', onKeyDown);
  document.addEventListener('keyup', onKeyUp);
  window.addEventListener('blur', onBlur);
  return () => {
    document.removeEventListener('keydown', onKeyDown);
    document.removeEventListener('keyup', onKeyUp);
    window.removeEventListener('blur', onBlur);
  };
}
