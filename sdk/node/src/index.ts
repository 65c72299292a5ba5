/**
 * redrive's Node/TypeScript SDK: a {@link Producer} for redrive's lanes (idempotent enqueue, a
 * task's record by id, waiting for its result) and the agent side of
 * the redrive agent protocol ({@link Agent}, {@link serveHttp}, `agent.middleware()`,
 * {@link servePool}), with signature verification ({@link verify}), and the receiving side of
 * tenant notifications ({@link verifyNotification}; `examples/notify-receiver.ts`).
 */

export { Agent, kindMatches, validateStepName } from "./agent.js";
export type { AgentOptions, Context, Emit, Handler, JsonCodec, StepOptions } from "./agent.js";
export {
  DEFAULT_MAX_REPLY_BYTES,
  MAX_STEPS,
  MAX_STEPS_OUTPUT_BYTES,
  MAX_STEP_NAME_CHARS,
  MAX_STEP_OUTPUT_BYTES,
} from "./agent.js";
export {
  AttemptClosedError,
  FailError,
  InvalidTaskError,
  PERMANENT_CLASSES,
  PartialExecutionError,
  RetryError,
  StepRefusedError,
  TRANSIENT_CLASSES,
  TaskFailedError,
  WaitTimeoutError,
  isPermanentClass,
  isTransientClass,
} from "./errors.js";
export type { FailureClass, PermanentClass, RetryOptions, TransientClass } from "./errors.js";
export { DEFAULT_MAX_BODY_BYTES, createMiddleware, serveHttp } from "./http.js";
export type { HttpOptions, Middleware, ServeHttpOptions } from "./http.js";
export { connect, connectOptionsFromEnv } from "./connection.js";
export type { ConnectOptions } from "./connection.js";
export { Keys } from "./keys.js";
export { servePool } from "./pool.js";
export type { PoolOptions } from "./pool.js";
export { DEFAULT_GROUP, WAITER_TTL_MS, WAIT_SLICE_MS } from "./lookup.js";
export type { GetTaskOptions, WaitOptions } from "./lookup.js";
export {
  DEFAULT_RETENTION_MS,
  EnqueueError,
  MAX_RETENTION_MS,
  MIN_RETENTION_MS,
  PIPELINE_CHUNK,
  Producer,
  STATS_KEEP_MS,
  validateRetention,
} from "./producer.js";
export type { EnqueueOptions, Enqueued, ProducerOptions } from "./producer.js";
export {
  FAILED_STATES,
  FINISHED_STATES,
  RUNS_KEPT,
  TASK_STATES,
  isFinished,
  isTaskState,
  parseRecord,
  recordToJson,
  runningOn,
  waitingEntry,
} from "./records.js";
export type { TaskRecord, TaskRun, TaskState } from "./records.js";
export { enqueueScript, enqueueScriptPath, taskReadScript, taskReadScriptPath } from "./scripts.js";
export type { LuaScript } from "./scripts.js";
export { MAX_ERROR_BYTES, bound } from "./reply.js";
export { RequestError, parseRequest } from "./request.js";
export type { AttemptRecord, Step, Task } from "./request.js";
export { SIGNATURE_TOLERANCE_SECS, checkSignature, sign, verify } from "./signature.js";
export { NOTIFICATION_TYPES, NotificationError, verifyNotification } from "./notify.js";
export type { Headers, Notification } from "./notify.js";
export type { VerifyOptions } from "./signature.js";
export {
  DEFAULT_MAX_PAYLOAD_BYTES,
  KNOWN_FIELDS,
  MAX_EXTRA_BYTES,
  MAX_EXTRA_FIELDS,
  MAX_SCHEMA_VERSION,
  generateTaskId,
  prepareTask,
} from "./task.js";
export type { NewTask, PreparedTask } from "./task.js";
