export * from './types.js';
export * from './changes.js';
