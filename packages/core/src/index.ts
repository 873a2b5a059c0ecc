import 'reflect-metadata';
export * from './errors';
export * from './contract';
export * from './context';
export * from './modules';
export * from './entry';
export * from './deny';
export * from './image';
export * as linux from './linux';
