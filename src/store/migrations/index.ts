import type { Migration } from 'kysely';
import { m001_initial } from './001_initial.js';

// Ordered by name; append new migrations here (never edit a shipped one).
export const migrations: Record<string, Migration> = {
  '001_initial': m001_initial,
};
