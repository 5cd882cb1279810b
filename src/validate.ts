/** Small checks shared by the modules that validate their inputs at the edge. */

/** A safe integer >= 1. */
export function isPositiveInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 1;
}
