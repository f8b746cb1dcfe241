// The compiler's public functions (the names and signatures are the contract other layers code
// against); each lives in the module named after what it holds.
export { compileVm, type CompileOptions } from './compile.js';
export { addressSetId, compileAddressSet } from './sets.js';
export { hostDesiredState } from './host.js';
export { analyzeChange, type Impact } from './impact.js';
export { evaluate } from './evaluate.js';
export { indexCloudState } from './cloud-index.js';
