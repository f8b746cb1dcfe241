// The log levels `--log-level` accepts (pino's), shared by the server's and the agent's command lines.
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
