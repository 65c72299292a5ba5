/**
 * Redis over TLS from the Node SDK, against a real redis-server listening with TLS only
 * (certificates made in the test with the openssl command, an ACL user with a password):
 * `connect` with a CA file and a client certificate publishes and reads tasks (`wait` on its own
 * connection included); a missing client certificate or the wrong authority is refused; settings
 * that contradict each other throw naming the setting; the CLI reads the members' variables.
 */

import { strict as assert } from "node:assert";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";

import { Producer, WaitTimeoutError, connect, type ConnectOptions } from "../src/index.js";
import { freePort, within } from "./helpers.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const CLI = join(HERE, "..", "src", "cli.js");
const PASSWORD = "node-tls-acl-Secret-57";

function openssl(dir: string, args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: "ignore", timeout: 60_000 });
}

function authority(dir: string, name: string): void {
  openssl(dir, [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", `/CN=${name}`,
    "-keyout", `${name}-key.pem`, "-out", `${name}.pem`,
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
  ]);
}

function leaf(dir: string, ca: string, name: string, ext: string): void {
  openssl(dir, ["req", "-newkey", "rsa:2048", "-nodes", "-subj", `/CN=${name}`, "-keyout", `${name}-key.pem`, "-out", `${name}.csr`]);
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl(dir, [
    "x509", "-req", "-in", `${name}.csr`, "-CA", `${ca}.pem`, "-CAkey", `${ca}-key.pem`, "-CAcreateserial",
    "-days", "2", "-out", `${name}.pem`, "-extfile", `${name}.ext`,
  ]);
}

describe("Redis over TLS", () => {
  let dir = "";
  let url = "";
  let server: ChildProcess | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "redrive-node-tls-"));
    authority(dir, "ca");
    authority(dir, "other-ca");
    leaf(dir, "ca", "server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
    leaf(dir, "ca", "client", "extendedKeyUsage=clientAuth\n");
    writeFileSync(join(dir, "password"), `${PASSWORD}\n`);
    const port = await freePort();
    const log = join(dir, "redis.log");
    const child = spawn(
      "redis-server",
      [
        "--port", "0", "--tls-port", String(port), "--bind", "127.0.0.1",
        "--tls-cert-file", join(dir, "server.pem"), "--tls-key-file", join(dir, "server-key.pem"),
        "--tls-ca-cert-file", join(dir, "ca.pem"), "--tls-auth-clients", "yes",
        "--user", "app", "on", `>${PASSWORD}`, "~*", "&*", "+@all", "--user", "default", "off",
        "--save", "", "--appendonly", "no", "--logfile", log,
      ],
      { stdio: "ignore" },
    );
    server = child;
    const started = Date.now();
    while (!(existsSync(log) && readFileSync(log, "utf8").includes("Ready to accept connections"))) {
      assert.ok(child.exitCode === null, `redis-server exited: ${existsSync(log) ? readFileSync(log, "utf8") : ""}`);
      assert.ok(Date.now() - started < 10_000, "redis-server (TLS) did not start in 10 s");
      await new Promise((r) => setTimeout(r, 20));
    }
    url = `rediss://127.0.0.1:${port}/0`;
  });

  after(() => {
    server?.kill("SIGKILL");
  });

  const options = (over: Partial<ConnectOptions> = {}): ConnectOptions => ({
    tlsCaFile: join(dir, "ca.pem"),
    tlsCertFile: join(dir, "client.pem"),
    tlsKeyFile: join(dir, "client-key.pem"),
    username: "app",
    passwordFile: join(dir, "password"),
    redis: { maxRetriesPerRequest: 1, connectTimeout: 5_000, retryStrategy: () => null },
    ...over,
  });

  it("publishes and reads tasks over mutual TLS", async () => {
    const redis = connect(url, options());
    const producer = new Producer(redis, { keyPrefix: "nodetls" });
    const got = await producer.enqueue({ tenant: "acme", kind: "triage", payload: { n: 1 }, task_id: "tls-1" });
    assert.equal(got.taskId, "tls-1");
    const record = await producer.getTask("acme", "tls-1");
    assert.equal(record?.state, "queued");
    // wait's own connection (a duplicate of the client) speaks TLS too.
    await assert.rejects(producer.wait("acme", "tls-1", { timeoutMs: 300 }), WaitTimeoutError);
    assert.equal(await redis.xlen("nodetls:{acme}:lane"), 1);
    redis.disconnect();
  });

  it("refuses a missing client certificate and the wrong authority", async () => {
    for (const over of [{ tlsCertFile: undefined, tlsKeyFile: undefined }, { tlsCaFile: join(dir, "other-ca.pem") }]) {
      const redis = connect(url, options(over));
      redis.on("error", () => undefined);
      const err = await within(10_000, "a refusal", redis.ping().then(() => null, (e: unknown) => e));
      assert.ok(err instanceof Error, `connected with ${JSON.stringify(over)}`);
      assert.ok(!err.message.includes(PASSWORD));
      redis.disconnect();
    }
  });

  it("throws for settings that contradict each other, naming the setting", () => {
    assert.throws(() => connect(url.replace("rediss://", "redis://"), { tlsCaFile: join(dir, "ca.pem") }), /not a rediss:\/\/ URL/);
    assert.throws(() => connect(url, { tlsCertFile: join(dir, "client.pem") }), /go together/);
    assert.throws(
      () => connect(url.replace("rediss://", `rediss://app:${PASSWORD}@`), { passwordFile: join(dir, "password") }),
      (e: Error) => e.message.includes("one place") && !e.message.includes(PASSWORD),
    );
    assert.throws(() => connect(url, { tlsCaFile: "/nonexistent/ca.pem" }), /tlsCaFile = '\/nonexistent\/ca.pem' cannot be read/);
    assert.throws(() => connect(url, { passwordEnv: "REDRIVE_TEST_UNSET_VAR" }), /not set/);
  });

  it("the CLI reads the members' variables", () => {
    const out = execFileSync(process.execPath, [CLI, "enqueue", "acme", "k", "--payload", "{}", "--task-id", "cli-1", "--key-prefix", "nodetls-cli"], {
      env: {
        PATH: process.env.PATH ?? "",
        REDRIVE_REDIS_URL: url,
        REDRIVE_REDIS__TLS_CA_FILE: join(dir, "ca.pem"),
        REDRIVE_REDIS__TLS_CERT_FILE: join(dir, "client.pem"),
        REDRIVE_REDIS__TLS_KEY_FILE: join(dir, "client-key.pem"),
        REDRIVE_REDIS__USERNAME: "app",
        REDRIVE_REDIS__PASSWORD_ENV: "APP_PW",
        APP_PW: PASSWORD,
      },
      encoding: "utf8",
      timeout: 60_000,
    });
    assert.ok(out.includes("cli-1"), out);
    assert.ok(!out.includes(PASSWORD));
  });
});
