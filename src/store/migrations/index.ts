import type { Migration } from 'kysely';
import { m001_initial } from './001_initial.js';
import { m002_unique_backstops } from './002_unique_backstops.js';
import { m003_async_job_server } from './003_async_job_server.js';
import { m005_change_feed } from './005_change_feed.js';
import { m007_observability } from './007_observability.js';
import { m008_sessions } from './008_sessions.js';
import { m009_retention } from './009_retention.js';
import { m010_rule_account } from './010_rule_account.js';
import { m011_tag_account } from './011_tag_account.js';
import { m012_server_incarnation } from './012_server_incarnation.js';
import { m013_job_classes } from './013_job_classes.js';
import { m014_bigint_positions } from './014_bigint_positions.js';
import { m015_bigint_rule_tag_ids } from './015_bigint_rule_tag_ids.js';
import { m016_bigint_group_vm_ids } from './016_bigint_group_vm_ids.js';

// Ordered by name; append new migrations here (never edit a shipped one).
export const migrations: Record<string, Migration> = {
  '001_initial': m001_initial,
  '002_unique_backstops': m002_unique_backstops,
  '003_async_job_server': m003_async_job_server,
  '005_change_feed': m005_change_feed,
  '007_observability': m007_observability,
  '008_sessions': m008_sessions,
  '009_retention': m009_retention,
  '010_rule_account': m010_rule_account,
  '011_tag_account': m011_tag_account,
  '012_server_incarnation': m012_server_incarnation,
  '013_job_classes': m013_job_classes,
  '014_bigint_positions': m014_bigint_positions,
  '015_bigint_rule_tag_ids': m015_bigint_rule_tag_ids,
  '016_bigint_group_vm_ids': m016_bigint_group_vm_ids,
};
