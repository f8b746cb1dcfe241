// The control plane seam: the server creates it with the store, gives `sink` to the API and lets it
// add the agent endpoint (AGENT_PATH) to its fastify instance.
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { ChangeSink } from '../model/changes.js';
import type { ConnectionInspector } from '../model/telemetry.js';
import type { Db } from '../store/db.js';
import { ControlPlaneImpl, type ControlOptions } from './plane.js';
import type { Cluster } from './cluster.js';

export type { ControlOptions } from './plane.js';

export interface ControlPlane {
  /** Given to the API: told after each commit that changed something (the changes are in the feed). */
  sink: ChangeSink;
  /** Given to the API: asks agents which connections they track (revoke dry runs). */
  connections: ConnectionInspector;
  /**
   * Given to the API on PostgreSQL: the write fence (cluster.ts), so a server the others buried does not
   * carry out the requests it received before it knew.
   */
  fence: Cluster['fence'];
  /** Given to the API on PostgreSQL: false while the heartbeat finds the database unreachable. */
  storeReachable: () => boolean;
  /** Adds the agent WebSocket endpoint (AGENT_PATH) to the API's fastify instance. */
  register(app: FastifyInstance): Promise<void>;
  close(): Promise<void>;
  /** The implementation, for tests and benchmarks (stats, settle). */
  impl?: ControlPlaneImpl;
}

export async function createControlPlane(db: Db, log: Logger, o: ControlOptions): Promise<ControlPlane> {
  const impl = await ControlPlaneImpl.create(db, log, o);
  return {
    sink: { publish: (changes) => impl.publish(changes) },
    connections: impl.connections,
    fence: impl.cluster.fence,
    // (a displaced server reaches its database: only its writes are refused, by the fence)
    storeReachable: () => impl.cluster.healthy || impl.cluster.displaced,
    register: (app) => impl.register(app),
    close: () => impl.close(),
    impl,
  };
}
