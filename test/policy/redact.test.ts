import { describe, expect, it } from "vitest";
import { compilePath, REDACTED, type RedactPath, redact } from "../../src/policy/redact.js";

const paths = (...ps: string[]) =>
  ps.map((p) => {
    const c = compilePath(p);
    if ("error" in c) throw new Error(c.error);
    return c as RedactPath;
  });

describe("redaction by path", () => {
  const record = {
    name: "Ada",
    ssn: "123-45-6789",
    cards: [
      { number: "4111", brand: "visa" },
      { number: "5500", brand: "mc" },
    ],
    contacts: { home: { phone: "1" }, work: { phone: "2", email: "w@x" } },
  };

  it("redacts what a JSON encoder would show of class instances: getters, toJSON, ORM entities", () => {
    class Customer {
      #ssn = "123-45-6789";
      constructor(readonly name: string) {}
      get ssn() {
        return this.#ssn;
      }
      toJSON() {
        return { name: this.name, ssn: this.ssn };
      }
    }
    const out = redact({ customers: [new Customer("Ada")] }, paths("customers[*].ssn"));
    expect(JSON.stringify(out)).not.toContain("123-45-6789");
    expect(out).toEqual({ customers: [{ name: "Ada", ssn: REDACTED }] });
    const untouched = new Customer("Bob");
    expect(redact(untouched, paths("address"))).toBe(untouched);
    const cyclic: Record<string, unknown> = { ssn: "1" };
    cyclic["self"] = cyclic;
    class Holder {
      constructor(readonly inner: unknown) {}
    }
    expect(redact(new Holder(cyclic), paths("inner.ssn"))).toBe(REDACTED);
  });

  it("redacts top-level keys, array wildcards, key wildcards and indexes", () => {
    const out = redact(record, paths("ssn", "cards[*].number", "contacts.*.phone"));
    expect(out).toEqual({
      name: "Ada",
      ssn: REDACTED,
      cards: [
        { number: REDACTED, brand: "visa" },
        { number: REDACTED, brand: "mc" },
      ],
      contacts: { home: { phone: REDACTED }, work: { phone: REDACTED, email: "w@x" } },
    });
    expect(redact(record, paths("cards[1].brand")).cards).toEqual([
      { number: "4111", brand: "visa" },
      { number: "5500", brand: REDACTED },
    ]);
  });

  it("never mutates the input and returns it untouched when nothing matches", () => {
    const copy = structuredClone(record);
    redact(record, paths("ssn", "cards[*].number"));
    expect(record).toEqual(copy);
    expect(redact(record, paths("missing.path"))).toBe(record);
  });

  it("leaves scalars and mismatched shapes alone", () => {
    expect(redact("text", paths("a"))).toBe("text");
    expect(redact({ cards: "none" }, paths("cards[*].number"))).toEqual({ cards: "none" });
    expect(redact([1, 2], paths("a"))).toEqual([1, 2]);
  });

  it("keeps a __proto__ key a plain property", () => {
    const input = JSON.parse('{"__proto__": {"secret": 1}}');
    const out = redact(input, paths("*.secret")) as Record<string, unknown>;
    expect(Object.getPrototypeOf(out)).toBe(Object.prototype);
    expect(Object.getOwnPropertyDescriptor(out, "__proto__")?.value).toEqual({ secret: REDACTED });
  });

  it("refuses malformed paths", () => {
    for (const bad of ["", "a..b", "a[x]", "a[", ".a"]) expect(compilePath(bad)).toHaveProperty("error");
  });
});
