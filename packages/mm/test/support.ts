/**
 * Real-process helpers for this package's tests: the shared ones live in core's test build;
 * C targets are compiled from this package's test/ directory.
 */
import * as path from 'path';
import { compileIn } from '@cptrst/core/dist/test/support/real-processes';

export * from '@cptrst/core/dist/test/support/real-processes';

export const compile = (name: string, extra: string[] = []): string => compileIn(path.resolve(__dirname, '../../test'), name, extra);
