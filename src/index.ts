/**
 * baton: graceful sequential reloads for Node.js services.
 *
 * - In the master: `new Supervisor(options)`, `start()`, `reload()`, `stop()`, `status()`.
 * - In a worker: `worker.listen(server)` on the socket the master holds; the runtime drains
 *   HTTP connections on stop so no client sees an error during a reload.
 */
export { Supervisor, ReloadError, StartError } from './supervisor.js'
export type { WorkerHooks, BoundAddress } from './supervisor.js'
export { OptionsError } from './options.js'
export type { SupervisorOptions, GroupOptions, BackoffOptions, ReloadOrder, Balance, Readiness } from './options.js'
export { UnsupportedPlatformError } from './native.js'
export { worker } from './worker.js'
export type { Worker, WorkerListenOptions, WorkerHook } from './worker.js'
export type * from './types.js'
