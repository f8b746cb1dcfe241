// What this server offers beyond the basics (listApis), so the console can hide or explain what is missing.
import { createContext, useContext } from 'react';
import type { Capabilities } from './api/client';

export const CapsContext = createContext<Capabilities | undefined>(undefined);

export function useCaps() {
  const caps = useContext(CapsContext);
  return {
    has: (command: string) => caps?.commands.has(command.toLowerCase()) ?? false,
    hasParam: (command: string, param: string) => caps?.params.get(command.toLowerCase())?.has(param.toLowerCase()) ?? false,
    loaded: caps !== undefined,
  };
}
