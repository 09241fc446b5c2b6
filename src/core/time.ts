/** ISO 8601 text of a time that may already be text (a row read back from JSON: an actor's reply from another node). */
export function iso(d: Date | string): string
export function iso(d: Date | string | null): string | null
export function iso(d: Date | string | null): string | null {
  return d === null ? null : typeof d === 'string' ? d : d.toISOString()
}
