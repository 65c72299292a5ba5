/**
 * The tenants a producer registered lately, as the Rust producer keeps them (src/producer.rs
 * `REGISTERED_FOR`, `REGISTERED_MAX`): internal, not exported by the package.
 */

/**
 * How long after its registration (an `SADD` of it that answered) a producer leaves a tenant out
 * of the registry `SADD`, ms.
 */
export const REGISTERED_FOR_MS = 1_000;

/** How many tenants a producer remembers as registered; past that it forgets them all. */
export const REGISTERED_MAX = 100_000;

/**
 * The tenants a producer registered lately (an `SADD` of them answered) and when
 * (`performance.now()`, monotonic): a tenant registered less than `forMs` ago is left out of the
 * registry `SADD`; when remembering more would pass `max` tenants, all are forgotten first.
 */
export class RegisteredTenants {
  private readonly at = new Map<string, number>();

  /** A memory leaving tenants out for `forMs` after their registration, of at most `max` tenants. */
  constructor(
    readonly forMs: number = REGISTERED_FOR_MS,
    readonly max: number = REGISTERED_MAX,
  ) {}

  /** How many tenants are remembered. */
  get size(): number {
    return this.at.size;
  }

  /** Those of `tenants` (in their order) not registered within `forMs`. */
  due(tenants: readonly string[]): string[] {
    const now = performance.now();
    return tenants.filter((t) => {
      const at = this.at.get(t);
      return at === undefined || now - at >= this.forMs;
    });
  }

  /** Remembers `tenants` as registered now (their `SADD` answered). */
  mark(tenants: readonly string[]): void {
    if (tenants.length === 0) return;
    if (this.at.size + tenants.length > this.max) this.at.clear();
    const now = performance.now();
    for (const t of tenants) this.at.set(t, now);
  }
}
