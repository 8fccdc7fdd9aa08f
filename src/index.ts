/**
 * baton: graceful sequential reloads for Node.js services.
 *
 * - In the master: `new Supervisor(options)`, `start()`, `reload()`, `stop()`, `status()`.
 * - In a worker: `worker.listen(server)` on the socket the master holds; the runtime drains
 *   HTTP connections on stop so no client sees an error during a reload.
 */
export { Supervisor, ReloadError, StartError } from './master/supervisor.js'
export type { WorkerHooks, BoundAddress } from './master/supervisor.js'
export { OptionsError } from './master/options.js'
export type {
  SupervisorOptions,
  GroupOptions,
  BackoffOptions,
  ReloadOrder,
  Balance,
  Readiness,
} from './master/options.js'
export { UnsupportedPlatformError } from './native.js'
export { worker } from './worker/worker.js'
export type { Worker, WorkerListenOptions, WorkerHook } from './worker/worker.js'
export type * from './types.js'
