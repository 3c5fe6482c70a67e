/**
 * Call ids: UUIDv7 (RFC 9562), time-ordered so the audit's call_id index grows at its end instead of at
 * random places. Built on `crypto.randomUUID()` (pooled entropy) by writing the 48-bit millisecond timestamp
 * over its first bits and setting the version to 7; the variant bits and 74 random bits stay.
 */
import { randomUUID } from "node:crypto";

let prefixMs = -1;
let prefix = "";

/**
 * A new UUIDv7.
 *
 * @example
 * newCallId(); // "019ad4c2-8e37-7290-8462-9a67e3b9907f"
 */
export function newCallId(now: number = Date.now()): string {
  if (now !== prefixMs) {
    const ts = now.toString(16).padStart(12, "0");
    prefix = `${ts.slice(0, 8)}-${ts.slice(8, 12)}-7`;
    prefixMs = now;
  }
  return prefix + randomUUID().slice(15);
}

/**
 * The millisecond timestamp a UUIDv7 call id carries (RFC 9562), or null for any other id.
 *
 * @example
 * callIdMillis(newCallId(1_700_000_000_000)); // 1700000000000
 */
export function callIdMillis(callId: string): number | null {
  const m = /^([0-9a-f]{8})-([0-9a-f]{4})-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i.exec(callId);
  return m === null ? null : Number.parseInt(`${m[1]}${m[2]}`, 16);
}
