// Placeholder for the control plane (issue 4): the server wires it in; the names are the contract.
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { ChangeSink } from '../model/changes.js';
import type { Db } from '../store/db.js';

export interface ControlPlane {
  /** Given to the API: receives committed changes. */
  sink: ChangeSink;
  /** Adds the agent WebSocket endpoint (AGENT_PATH) to the API's fastify instance. */
  register(app: FastifyInstance): Promise<void>;
  close(): Promise<void>;
}

export async function createControlPlane(_db: Db, _log: Logger): Promise<ControlPlane> {
  return { sink: { publish() {} }, async register() {}, async close() {} };
}
