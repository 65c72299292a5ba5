/**
 * The Redis key names the producer writes (src/keys.rs): every key of a tenant carries the
 * Redis Cluster hash tag `{<tenant>}`.
 */

/** Key names under one prefix (default `redrive`). */
export class Keys {
  /** The prefix every key starts with. */
  readonly prefix: string;

  /** Key names under `prefix`. */
  constructor(prefix = "redrive") {
    if (prefix.length === 0) throw new TypeError("the key prefix must not be empty");
    this.prefix = prefix;
  }

  /** The registry of tenants (a set), read by fleet discovery: `<prefix>:tenants`. */
  tenants(): string {
    return `${this.prefix}:tenants`;
  }

  /** The stream holding a tenant's tasks: `<prefix>:{<tenant>}:lane`. */
  lane(tenant: string): string {
    return `${this.prefix}:{${tenant}}:lane`;
  }
}
