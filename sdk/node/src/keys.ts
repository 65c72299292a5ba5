/**
 * The Redis key names the producer writes and reads (src/keys.rs): every key of a tenant carries the
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

  /**
   * The pub/sub channel a producer publishes on (the round trip's tenants, comma-separated) after
   * an enqueue whose registration added a tenant, so members serve it at once:
   * `<prefix>:tenants:new`. Not a key: it holds nothing, and the registry stays the truth (a member
   * that missed a message finds the tenant by its periodic look).
   */
  tenantSignals(): string {
    return `${this.prefix}:tenants:new`;
  }

  /** The stream holding a tenant's tasks: `<prefix>:{<tenant>}:lane`. */
  lane(tenant: string): string {
    return `${this.prefix}:{${tenant}}:lane`;
  }

  /** The record of one task (a hash): `<prefix>:{<tenant>}:task:<task_id>`. */
  task(tenant: string, taskId: string): string {
    return `${this.taskPrefix(tenant)}${taskId}`;
  }

  /** The start of a tenant's record names: `<prefix>:{<tenant>}:task:`. */
  taskPrefix(tenant: string): string {
    return `${this.prefix}:{${tenant}}:task:`;
  }

  /** The index of a tenant's records (a sorted set by last change): `<prefix>:{<tenant>}:tasks`. */
  tasks(tenant: string): string {
    return `${this.prefix}:{${tenant}}:tasks`;
  }

  /**
   * The stream of a tenant's task finishes (fields `task`, `state`, `entry`; written only while
   * a waiter is registered in {@link Keys.waiters}), what `Producer.wait` blocks on:
   * `<prefix>:{<tenant>}:events`.
   */
  events(tenant: string): string {
    return `${this.prefix}:{${tenant}}:events`;
  }

  /**
   * The tenant's registered waiters (a sorted set: member a waiter id, score when its
   * registration expires, ms by the Redis server's clock): the fleet publishes finish events
   * only while one is live. `<prefix>:{<tenant>}:waiters`.
   */
  waiters(tenant: string): string {
    return `${this.prefix}:{${tenant}}:waiters`;
  }

  /**
   * The start of a tenant's done log names, `<prefix>:{<tenant>}:done:` (then the second of
   * the lane entries whose done facts — member, start, end, output — a member appended there
   * instead of writing their records); the record reader (task_read.lua) reads them.
   */
  doneLogPrefix(tenant: string): string {
    return `${this.prefix}:{${tenant}}:done:`;
  }

  /** The start of a tenant's per-minute stats bucket names: `<prefix>:{<tenant>}:stats:`. */
  statsPrefix(tenant: string): string {
    return `${this.prefix}:{${tenant}}:stats:`;
  }
}
