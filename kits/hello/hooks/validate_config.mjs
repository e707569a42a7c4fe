// validate_config(app_config) for the hello kit: the only setting is a non-empty title.
export function validate_config(config) {
  const problems = []
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    return {ok: false, problems: [{path: '', message: 'the config must be a mapping'}]}
  }
  for (const key of Object.keys(config)) {
    if (key !== 'title') problems.push({path: key, message: `unknown setting "${key}" (hello only has "title")`})
  }
  if ('title' in config && (typeof config.title !== 'string' || config.title.trim() === '')) {
    problems.push({path: 'title', message: 'title must be a non-empty string'})
  }
  return {ok: problems.length === 0, problems}
}
