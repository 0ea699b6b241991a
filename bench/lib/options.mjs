// Command-line numbers of the bench scripts, refused with a message naming the option rather than
// running with NaN (a loop that never runs, a median of nothing).

/** `text` as a number above 0; `fallback` when the option was not given. */
export function positive(name, text, fallback) {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!(n > 0)) throw new Error(`--${name} must be a positive number, got ${JSON.stringify(text)}`);
  return n;
}

/** `text` as a whole number above 0 (rounds, repetitions). */
export function count(name, text, fallback) {
  const n = positive(name, text, fallback);
  if (!Number.isInteger(n)) throw new Error(`--${name} must be a whole number, got ${JSON.stringify(text)}`);
  return n;
}
