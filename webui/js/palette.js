// Class colours: the palette of appliance/classes.py (keep the two in step), readable on a dark screen.
// Class i gets PALETTE[i % length] unless the dataset chose its colour; boxes without a chosen colour (the live
// camera, "Try it") use the same rule, so a class looks the same everywhere.

export const PALETTE = [
  '#ff6b6b', '#4dabf7', '#51cf66', '#fcc419', '#cc5de8', '#ff922b',
  '#22b8cf', '#f06595', '#94d82d', '#845ef7', '#20c997', '#fab005',
];

export function defaultColor(index) {
  return PALETTE[index % PALETTE.length];
}
