/**
 * An ioredis client for the fleet's Redis with the settings of redrive's `[redis]` section:
 * `rediss://` URLs with a CA file, a client certificate and key (mutual TLS), `tlsInsecure`
 * only when asked for (with a warning), and the ACL user and password from the URL, a file or
 * an environment variable. {@link connectOptionsFromEnv} reads the `REDRIVE_REDIS__*` variables a
 * member reads. Errors name the setting, never a password.
 */

import { readFileSync } from "node:fs";

import { Redis, type RedisOptions } from "ioredis";

/** Options of {@link connect}: the names of the fleet's `[redis]` settings, in camelCase. */
export interface ConnectOptions {
  /** PEM file of the authority that signed the server's certificate (else Node's roots). */
  tlsCaFile?: string;
  /** PEM file of this client's certificate, for mutual TLS (with `tlsKeyFile`). */
  tlsCertFile?: string;
  /** PEM file of the client certificate's private key. */
  tlsKeyFile?: string;
  /** Skip the check of the server's certificate (warned about on stderr). */
  tlsInsecure?: boolean;
  /** The ACL user, when not in the URL. */
  username?: string;
  /** A file holding the password (one line), when not in the URL. */
  passwordFile?: string;
  /** The name of an environment variable holding the password, when not in the URL. */
  passwordEnv?: string;
  /** Further ioredis options (they win over the ones derived here). */
  redis?: RedisOptions;
}

function isTls(url: string): boolean {
  const scheme = (url.split("://", 1)[0] ?? "").toLowerCase();
  return scheme === "rediss" || scheme === "valkeys";
}

function readSetting(setting: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? "unreadable";
    throw new TypeError(`${setting} = '${path}' cannot be read (${code})`);
  }
}

function password(options: ConnectOptions): string | undefined {
  const { passwordFile, passwordEnv } = options;
  if (passwordFile && passwordEnv) {
    throw new TypeError("passwordFile and passwordEnv are both set: read the password from one of them");
  }
  let text: string;
  let where: string;
  if (passwordFile) {
    text = readSetting("passwordFile", passwordFile).toString("utf8").replace(/\r?\n$/, "");
    where = `passwordFile = '${passwordFile}'`;
  } else if (passwordEnv) {
    const value = process.env[passwordEnv];
    if (value === undefined) throw new TypeError(`passwordEnv = '${passwordEnv}' names a variable that is not set`);
    text = value;
    where = `passwordEnv = '${passwordEnv}'`;
  } else {
    return undefined;
  }
  if (text === "" || /[\r\n]/.test(text)) throw new TypeError(`${where}: the password is empty or spans several lines`);
  return text;
}

/**
 * An ioredis client for `url` with redrive's `[redis]` settings. Throws `TypeError` for
 * settings that contradict each other (TLS files with a `redis://` URL, a certificate without
 * its key, a password in the URL and in a file) or name files that cannot be read.
 */
export function connect(url: string, options: ConnectOptions = {}): Redis {
  const derived: RedisOptions = {};
  const tlsSet = Boolean(options.tlsCaFile ?? options.tlsCertFile ?? options.tlsKeyFile) || options.tlsInsecure === true;
  if (!isTls(url)) {
    if (tlsSet) {
      throw new TypeError("TLS settings are set but the URL is not a rediss:// URL: use rediss:// to connect with TLS, or clear them");
    }
  } else {
    if (options.tlsInsecure === true && options.tlsCaFile) {
      throw new TypeError("tlsInsecure skips the check tlsCaFile is for: set one of them");
    }
    if (Boolean(options.tlsCertFile) !== Boolean(options.tlsKeyFile)) {
      throw new TypeError("tlsCertFile and tlsKeyFile go together: set both or neither");
    }
    const tls: NonNullable<RedisOptions["tls"]> = {};
    if (options.tlsCaFile) tls.ca = readSetting("tlsCaFile", options.tlsCaFile);
    if (options.tlsCertFile && options.tlsKeyFile) {
      tls.cert = readSetting("tlsCertFile", options.tlsCertFile);
      tls.key = readSetting("tlsKeyFile", options.tlsKeyFile);
    }
    if (options.tlsInsecure === true) {
      tls.rejectUnauthorized = false;
      process.emitWarning(
        "INSECURE: tlsInsecure is on, so the Redis server's TLS certificate is NOT verified: anyone on the network path can read and change every task",
      );
    }
    derived.tls = tls;
  }
  const parsed = new URL(url);
  if (options.username) {
    if (parsed.username && decodeURIComponent(parsed.username) !== options.username) {
      throw new TypeError("username and the user in the URL differ: set the user in one place");
    }
    derived.username = options.username;
  }
  const pw = password(options);
  if (pw !== undefined) {
    if (parsed.password) {
      throw new TypeError("the URL carries a password and passwordFile or passwordEnv gives another: set the password in one place");
    }
    derived.password = pw;
  }
  return new Redis(url, { ...derived, ...options.redis });
}

/** {@link connect}'s options from the `REDRIVE_REDIS__*` variables a member reads (unset or empty ones left out). */
export function connectOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): ConnectOptions {
  const get = (name: string): string | undefined => {
    const v = env[`REDRIVE_REDIS__${name}`]?.trim();
    return v ? v : undefined;
  };
  const out: ConnectOptions = {};
  const set = <K extends keyof ConnectOptions>(key: K, value: ConnectOptions[K] | undefined): void => {
    if (value !== undefined) out[key] = value;
  };
  set("tlsCaFile", get("TLS_CA_FILE"));
  set("tlsCertFile", get("TLS_CERT_FILE"));
  set("tlsKeyFile", get("TLS_KEY_FILE"));
  set("username", get("USERNAME"));
  set("passwordFile", get("PASSWORD_FILE"));
  set("passwordEnv", get("PASSWORD_ENV"));
  if (["1", "true", "yes"].includes((get("TLS_INSECURE") ?? "").toLowerCase())) out.tlsInsecure = true;
  return out;
}
