// render_env(app, secrets) for the hello kit: the page title from the kit config, and the
// greeting secret (when given) as a file only the workload can read.
export function render_env(app, secrets) {
  const env = {HELLO_TITLE: String(app.config?.title ?? 'hello')}
  const files = []
  if (secrets.HELLO_GREETING) {
    env.HELLO_GREETING = secrets.HELLO_GREETING
    files.push({path: '/run/hello/greeting', content: secrets.HELLO_GREETING, mode: 0o400, secret: true})
  }
  return {env, files}
}
