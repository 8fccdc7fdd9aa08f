// NestJS 12 (Express platform) with its own shutdown hooks, no baton import and no build
// step: plain JavaScript, the decorators applied by calling them. Run with
//   PORT=3000 baton start examples/frameworks/nest.mjs --count 4
// `app.enableShutdownHooks()` makes Nest close the app on SIGTERM and then signal itself
// again; under baton that handler runs after baton's drain (src/worker/app-signals.ts).
import 'reflect-metadata'
import { Controller, Get, Header, Module } from '@nestjs/common'
import { NestFactory } from '@nestjs/core'

import { version } from './version.mjs'

class VersionController {
  get() {
    return version
  }
}
// What `@Controller() class VersionController { @Get() @Header(...) get() {} }` compiles to.
const get = Object.getOwnPropertyDescriptor(VersionController.prototype, 'get')
Header('x-pid', String(process.pid))(VersionController.prototype, 'get', get)
Get()(VersionController.prototype, 'get', get)
Controller()(VersionController)

class AppModule {}
Module({ controllers: [VersionController] })(AppModule)

const app = await NestFactory.create(AppModule, { logger: ['error', 'warn'] })
app.enableShutdownHooks()
await app.listen(Number(process.env.PORT ?? 3000))
