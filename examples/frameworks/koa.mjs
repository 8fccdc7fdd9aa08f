// Koa as its docs write it: no baton import. Run with
//   PORT=3000 baton start examples/frameworks/koa.mjs --count 4
import Koa from 'koa'

import { version } from './version.mjs'

const app = new Koa()
app.use(async (ctx) => {
  ctx.set('x-pid', String(process.pid))
  ctx.body = version
})
app.listen(Number(process.env.PORT ?? 3000))
