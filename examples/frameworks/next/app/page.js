import { version } from '../../version.mjs'

// Rendered per request, so every worker answers with the version it started with.
export const dynamic = 'force-dynamic'

export default function Page() {
  return (
    <main>
      <h1>Hello from Next.js</h1>
      <p id="version">{version}</p>
      <p id="pid">{process.pid}</p>
    </main>
  )
}
