/** The image format: layouts declared with decorators, and a checked sequential stream. */
export {
  FORMAT_MAJOR, FORMAT_MINOR, MAGIC, PREAMBLE_SIZE, ObjectType, ObjectFlag, ContentKind, HEAD_TAG,
  DEFAULT_MAX_OBJECT_BYTES, MIN_PAGE_SIZE, MAX_PAGE_SIZE,
} from './types';
export { ImageError } from './image-error';
export {
  registerObjectType, objectTypeEntry, objectTypes, THIRD_PARTY_TYPES_FROM, MAX_OBJECT_TYPE, CPTRST_OWNER,
} from './object-types';
export type { ObjectTypeEntry } from './object-types';
export {
  objectType, recordLayout, u8, u16, u32, i32, u64, i64, bool, str, bytes, u64s, u32s, strs, record, records,
  layoutOf, layoutForType, objectLayouts, typeName, describeLayouts,
} from './layout';
export type { FieldKind, FieldOptions, FieldSpec, Layout, LayoutClass, LayoutDescription, FieldDescription } from './layout';
export { encodeRecord, decodeRecord } from './codec';
export { cstruct, cfield, cstructOf, decodeStruct, encodeStruct, sizeOfStruct, offsetOfField } from './cstruct';
export type { CScalar, CFieldType, CFieldSpec, CStructLayout, CFieldOptions, StructValues } from './cstruct';
export type { DecodeContext } from './codec';
export { OBJ_HEADER_SIZE, HeaderOffset, hashPages, objectChecksum } from './framing';
export type { ObjectHeader } from './framing';
export { ImageHead, PagesFollow, Terminator } from './head';
export type { ImageHeadInit } from './head';
export { ImageWriter } from './writer';
export { COMPRESSIONS } from './compress';
export type { CompressionName } from './compress';
export type { ImageSink, ImageWriterOptions, PayloadFileSource, PayloadSource } from './writer';
export { ImageReader } from './reader';
export type { FilePayload, ImageSource, ImageRecord, ImageReaderOptions } from './reader';
export { fileSink, fileSource, MemorySink, bufferSource } from './io';
export { layoutSnapshot, checkLayoutSnapshot, checkReachability } from './snapshot';
export type { LayoutSnapshot } from './snapshot';
