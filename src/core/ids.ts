/** Entity ids: UUIDs (gen_random_uuid / crypto.randomUUID), checked before they reach SQL or a topic. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

export function isUuid(s: string): boolean {
  return UUID.test(s)
}
