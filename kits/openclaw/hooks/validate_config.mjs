// validate_config(app_config, app) for OpenClaw: the checks that decide whether the gateway is
// reachable and safe inside an Aegis instance. OpenClaw's own schema is checked by OpenClaw.
import {AGENT_ROLES, GATEWAY_PORT, isPlainObject} from './openclaw-config.mjs'

export function validate_config(config, app = {}) {
  const problems = []
  const problem = (path, message) => problems.push({path, message})
  if (!isPlainObject(config)) return {ok: false, problems: [{path: '', message: 'the OpenClaw config must be a mapping (an openclaw.json object)'}]}

  const exposed = Array.isArray(app.expose) && app.expose.length > 0 ? app.expose : [GATEWAY_PORT]
  const gateway = config.gateway ?? {}
  if (!isPlainObject(gateway)) problem('gateway', 'must be a mapping')
  else {
    if (gateway.mode !== undefined && gateway.mode !== 'local') problem('gateway.mode', `is "${gateway.mode}"; an Aegis instance runs the gateway itself: use "local"`)
    const port = gateway.port ?? GATEWAY_PORT
    if (!Number.isInteger(port) || port < 1 || port > 65535) problem('gateway.port', `${JSON.stringify(port)} is not a TCP port`)
    else if (!exposed.includes(port)) problem('gateway.port', `is ${port} but the kit exposes ${exposed.join(', ')}: the Control UI would be unreachable`)
    const bind = gateway.bind ?? 'lan'
    const auth = gateway.auth ?? {mode: 'token'}
    if (bind === 'loopback') {
      problem('gateway.bind', 'is "loopback": behind the instance port proxy every client would look local and skip auth; use "lan" with token auth')
    } else if (!isPlainObject(auth) || auth.mode === 'none' || auth.mode === undefined) {
      problem('gateway.auth.mode', `bind "${bind}" accepts connections from outside the VM: set auth.mode to "token" (the kit generates OPENCLAW_GATEWAY_TOKEN) or "password"`)
    }
    if (isPlainObject(auth) && typeof auth.token === 'string' && auth.token !== '') {
      problem('gateway.auth.token', 'a literal token in the config would be stored in the workspace: leave it out, the kit passes OPENCLAW_GATEWAY_TOKEN through the environment')
    }
  }

  const entries = config.agents?.entries
  if (entries !== undefined && !isPlainObject(entries)) problem('agents.entries', 'must be a mapping of agent id to settings')
  for (const [id, agent] of Object.entries(isPlainObject(entries) ? entries : {})) {
    if (isPlainObject(agent) && agent.role !== undefined && !AGENT_ROLES.includes(agent.role)) {
      problem(`agents.entries.${id}.role`, `"${agent.role}" is not an agent role (one of ${AGENT_ROLES.join(', ')})`)
    }
  }

  const telegram = config.channels?.telegram
  if (isPlainObject(telegram) && typeof telegram.webhookUrl === 'string' && telegram.webhookUrl !== '' && !/^https:\/\//.test(telegram.webhookUrl)) {
    problem('channels.telegram.webhookUrl', 'Telegram only calls https:// webhook URLs')
  }
  if (isPlainObject(telegram) && typeof telegram.botToken === 'string' && telegram.botToken !== '') {
    problem('channels.telegram.botToken', 'a literal bot token in the config would be stored in the workspace: pass --secret TELEGRAM_BOT_TOKEN instead')
  }
  return {ok: problems.length === 0, problems}
}
