// scorehub.js: the browser client of the scorehub hub, bundled from web/src/scorehub.js
// with @msgpack/msgpack (ISC license) by web/build.mjs. Do not edit: change the source and rebuild.
var __defProp = Object.defineProperty;
var __defNormalProp = (obj, key, value) => key in obj ? __defProp(obj, key, { enumerable: true, configurable: true, writable: true, value }) : obj[key] = value;
var __publicField = (obj, key, value) => __defNormalProp(obj, typeof key !== "symbol" ? key + "" : key, value);

// node_modules/@msgpack/msgpack/dist.esm/utils/utf8.mjs
var sharedTextEncoder = new TextEncoder();
var CHUNK_SIZE = 4096;
function utf8DecodeJs(bytes, inputOffset, byteLength) {
  let offset = inputOffset;
  const end = offset + byteLength;
  const units = [];
  let result = "";
  while (offset < end) {
    const byte1 = bytes[offset++];
    if ((byte1 & 128) === 0) {
      units.push(byte1);
    } else if ((byte1 & 224) === 192) {
      const byte2 = bytes[offset++] & 63;
      units.push((byte1 & 31) << 6 | byte2);
    } else if ((byte1 & 240) === 224) {
      const byte2 = bytes[offset++] & 63;
      const byte3 = bytes[offset++] & 63;
      units.push((byte1 & 31) << 12 | byte2 << 6 | byte3);
    } else if ((byte1 & 248) === 240) {
      const byte2 = bytes[offset++] & 63;
      const byte3 = bytes[offset++] & 63;
      const byte4 = bytes[offset++] & 63;
      let unit = (byte1 & 7) << 18 | byte2 << 12 | byte3 << 6 | byte4;
      if (unit > 65535) {
        unit -= 65536;
        units.push(unit >>> 10 & 1023 | 55296);
        unit = 56320 | unit & 1023;
      }
      units.push(unit);
    } else {
      units.push(byte1);
    }
    if (units.length >= CHUNK_SIZE) {
      result += String.fromCharCode(...units);
      units.length = 0;
    }
  }
  if (units.length > 0) {
    result += String.fromCharCode(...units);
  }
  return result;
}
var sharedTextDecoder = new TextDecoder();
var TEXT_DECODER_THRESHOLD = 200;
function utf8DecodeTD(bytes, inputOffset, byteLength) {
  const stringBytes = bytes.subarray(inputOffset, inputOffset + byteLength);
  return sharedTextDecoder.decode(stringBytes);
}
function utf8Decode(bytes, inputOffset, byteLength) {
  if (byteLength > TEXT_DECODER_THRESHOLD) {
    return utf8DecodeTD(bytes, inputOffset, byteLength);
  } else {
    return utf8DecodeJs(bytes, inputOffset, byteLength);
  }
}

// node_modules/@msgpack/msgpack/dist.esm/ExtData.mjs
var ExtData = class {
  constructor(type, data) {
    __publicField(this, "type");
    __publicField(this, "data");
    this.type = type;
    this.data = data;
  }
};

// node_modules/@msgpack/msgpack/dist.esm/DecodeError.mjs
var DecodeError = class _DecodeError extends Error {
  constructor(message) {
    super(message);
    const proto = Object.create(_DecodeError.prototype);
    Object.setPrototypeOf(this, proto);
    Object.defineProperty(this, "name", {
      configurable: true,
      enumerable: false,
      value: _DecodeError.name
    });
  }
};

// node_modules/@msgpack/msgpack/dist.esm/utils/int.mjs
var UINT32_MAX = 4294967295;
function setInt64(view, offset, value) {
  const high = Math.floor(value / 4294967296);
  const low = value;
  view.setUint32(offset, high);
  view.setUint32(offset + 4, low);
}
function getInt64(view, offset) {
  const high = view.getInt32(offset);
  const low = view.getUint32(offset + 4);
  return high * 4294967296 + low;
}
function getUint64(view, offset) {
  const high = view.getUint32(offset);
  const low = view.getUint32(offset + 4);
  return high * 4294967296 + low;
}

// node_modules/@msgpack/msgpack/dist.esm/timestamp.mjs
var EXT_TIMESTAMP = -1;
var TIMESTAMP32_MAX_SEC = 4294967296 - 1;
var TIMESTAMP64_MAX_SEC = 17179869184 - 1;
function encodeTimeSpecToTimestamp({ sec, nsec }) {
  if (sec >= 0 && nsec >= 0 && sec <= TIMESTAMP64_MAX_SEC) {
    if (nsec === 0 && sec <= TIMESTAMP32_MAX_SEC) {
      const rv = new Uint8Array(4);
      const view = new DataView(rv.buffer);
      view.setUint32(0, sec);
      return rv;
    } else {
      const secHigh = sec / 4294967296;
      const secLow = sec & 4294967295;
      const rv = new Uint8Array(8);
      const view = new DataView(rv.buffer);
      view.setUint32(0, nsec << 2 | secHigh & 3);
      view.setUint32(4, secLow);
      return rv;
    }
  } else {
    const rv = new Uint8Array(12);
    const view = new DataView(rv.buffer);
    view.setUint32(0, nsec);
    setInt64(view, 4, sec);
    return rv;
  }
}
function encodeDateToTimeSpec(date) {
  const msec = date.getTime();
  const sec = Math.floor(msec / 1e3);
  const nsec = (msec - sec * 1e3) * 1e6;
  const nsecInSec = Math.floor(nsec / 1e9);
  return {
    sec: sec + nsecInSec,
    nsec: nsec - nsecInSec * 1e9
  };
}
function encodeTimestampExtension(object) {
  if (object instanceof Date) {
    const timeSpec = encodeDateToTimeSpec(object);
    return encodeTimeSpecToTimestamp(timeSpec);
  } else {
    return null;
  }
}
function decodeTimestampToTimeSpec(data) {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  switch (data.byteLength) {
    case 4: {
      const sec = view.getUint32(0);
      const nsec = 0;
      return { sec, nsec };
    }
    case 8: {
      const nsec30AndSecHigh2 = view.getUint32(0);
      const secLow32 = view.getUint32(4);
      const sec = (nsec30AndSecHigh2 & 3) * 4294967296 + secLow32;
      const nsec = nsec30AndSecHigh2 >>> 2;
      return { sec, nsec };
    }
    case 12: {
      const sec = getInt64(view, 4);
      const nsec = view.getUint32(0);
      return { sec, nsec };
    }
    default:
      throw new DecodeError(`Unrecognized data size for timestamp (expected 4, 8, or 12): ${data.length}`);
  }
}
function decodeTimestampExtension(data) {
  const timeSpec = decodeTimestampToTimeSpec(data);
  return new Date(timeSpec.sec * 1e3 + timeSpec.nsec / 1e6);
}
var timestampExtension = {
  type: EXT_TIMESTAMP,
  encode: encodeTimestampExtension,
  decode: decodeTimestampExtension
};

// node_modules/@msgpack/msgpack/dist.esm/ExtensionCodec.mjs
var _ExtensionCodec = class _ExtensionCodec {
  constructor() {
    // ensures ExtensionCodecType<X> matches ExtensionCodec<X>
    // this will make type errors a lot more clear
    // eslint-disable-next-line @typescript-eslint/naming-convention
    __publicField(this, "__brand");
    // built-in extensions
    __publicField(this, "builtInEncoders", []);
    __publicField(this, "builtInDecoders", []);
    // custom extensions
    __publicField(this, "encoders", []);
    __publicField(this, "decoders", []);
    this.register(timestampExtension);
  }
  register({ type, encode, decode: decode2 }) {
    if (type >= 0) {
      this.encoders[type] = encode;
      this.decoders[type] = decode2;
    } else {
      const index = -1 - type;
      this.builtInEncoders[index] = encode;
      this.builtInDecoders[index] = decode2;
    }
  }
  tryToEncode(object, context) {
    for (let i = 0; i < this.builtInEncoders.length; i++) {
      const encodeExt = this.builtInEncoders[i];
      if (encodeExt != null) {
        const data = encodeExt(object, context);
        if (data != null) {
          const type = -1 - i;
          return new ExtData(type, data);
        }
      }
    }
    for (let i = 0; i < this.encoders.length; i++) {
      const encodeExt = this.encoders[i];
      if (encodeExt != null) {
        const data = encodeExt(object, context);
        if (data != null) {
          const type = i;
          return new ExtData(type, data);
        }
      }
    }
    if (object instanceof ExtData) {
      return object;
    }
    return null;
  }
  decode(data, type, context) {
    const decodeExt = type < 0 ? this.builtInDecoders[-1 - type] : this.decoders[type];
    if (decodeExt) {
      return decodeExt(data, type, context);
    } else {
      return new ExtData(type, data);
    }
  }
};
__publicField(_ExtensionCodec, "defaultCodec", new _ExtensionCodec());
var ExtensionCodec = _ExtensionCodec;

// node_modules/@msgpack/msgpack/dist.esm/utils/typedArrays.mjs
function isArrayBufferLike(buffer) {
  return buffer instanceof ArrayBuffer || typeof SharedArrayBuffer !== "undefined" && buffer instanceof SharedArrayBuffer;
}
function ensureUint8Array(buffer) {
  if (buffer instanceof Uint8Array) {
    return buffer;
  } else if (ArrayBuffer.isView(buffer)) {
    return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  } else if (isArrayBufferLike(buffer)) {
    return new Uint8Array(buffer);
  } else {
    return Uint8Array.from(buffer);
  }
}

// node_modules/@msgpack/msgpack/dist.esm/utils/prettyByte.mjs
function prettyByte(byte) {
  return `${byte < 0 ? "-" : ""}0x${Math.abs(byte).toString(16).padStart(2, "0")}`;
}

// node_modules/@msgpack/msgpack/dist.esm/CachedKeyDecoder.mjs
var DEFAULT_MAX_KEY_LENGTH = 16;
var DEFAULT_MAX_LENGTH_PER_KEY = 16;
var CachedKeyDecoder = class {
  constructor(maxKeyLength = DEFAULT_MAX_KEY_LENGTH, maxLengthPerKey = DEFAULT_MAX_LENGTH_PER_KEY) {
    __publicField(this, "hit", 0);
    __publicField(this, "miss", 0);
    __publicField(this, "caches");
    __publicField(this, "maxKeyLength");
    __publicField(this, "maxLengthPerKey");
    this.maxKeyLength = maxKeyLength;
    this.maxLengthPerKey = maxLengthPerKey;
    this.caches = [];
    for (let i = 0; i < this.maxKeyLength; i++) {
      this.caches.push([]);
    }
  }
  canBeCached(byteLength) {
    return byteLength > 0 && byteLength <= this.maxKeyLength;
  }
  find(bytes, inputOffset, byteLength) {
    const records = this.caches[byteLength - 1];
    FIND_CHUNK: for (const record of records) {
      const recordBytes = record.bytes;
      for (let j = 0; j < byteLength; j++) {
        if (recordBytes[j] !== bytes[inputOffset + j]) {
          continue FIND_CHUNK;
        }
      }
      return record.str;
    }
    return null;
  }
  store(bytes, value) {
    const records = this.caches[bytes.length - 1];
    const record = { bytes, str: value };
    if (records.length >= this.maxLengthPerKey) {
      records[Math.random() * records.length | 0] = record;
    } else {
      records.push(record);
    }
  }
  decode(bytes, inputOffset, byteLength) {
    const cachedValue = this.find(bytes, inputOffset, byteLength);
    if (cachedValue != null) {
      this.hit++;
      return cachedValue;
    }
    this.miss++;
    const str = utf8DecodeJs(bytes, inputOffset, byteLength);
    const slicedCopyOfBytes = Uint8Array.prototype.slice.call(bytes, inputOffset, inputOffset + byteLength);
    this.store(slicedCopyOfBytes, str);
    return str;
  }
};

// node_modules/@msgpack/msgpack/dist.esm/Decoder.mjs
var STATE_ARRAY = "array";
var STATE_MAP_KEY = "map_key";
var STATE_MAP_VALUE = "map_value";
var mapKeyConverter = (key) => {
  if (typeof key === "string" || typeof key === "number") {
    return key;
  }
  throw new DecodeError("The type of key must be string or number but " + typeof key);
};
var StackPool = class {
  constructor() {
    __publicField(this, "stack", []);
    __publicField(this, "stackHeadPosition", -1);
  }
  get length() {
    return this.stackHeadPosition + 1;
  }
  top() {
    return this.stack[this.stackHeadPosition];
  }
  pushArrayState(size) {
    const state = this.getUninitializedStateFromPool();
    state.type = STATE_ARRAY;
    state.position = 0;
    state.size = size;
    state.array = new Array(size);
  }
  pushMapState(size) {
    const state = this.getUninitializedStateFromPool();
    state.type = STATE_MAP_KEY;
    state.readCount = 0;
    state.size = size;
    state.map = {};
  }
  getUninitializedStateFromPool() {
    this.stackHeadPosition++;
    if (this.stackHeadPosition === this.stack.length) {
      const partialState = {
        type: void 0,
        size: 0,
        array: void 0,
        position: 0,
        readCount: 0,
        map: void 0,
        key: null
      };
      this.stack.push(partialState);
    }
    return this.stack[this.stackHeadPosition];
  }
  release(state) {
    const topStackState = this.stack[this.stackHeadPosition];
    if (topStackState !== state) {
      throw new Error("Invalid stack state. Released state is not on top of the stack.");
    }
    if (state.type === STATE_ARRAY) {
      const partialState = state;
      partialState.size = 0;
      partialState.array = void 0;
      partialState.position = 0;
      partialState.type = void 0;
    }
    if (state.type === STATE_MAP_KEY || state.type === STATE_MAP_VALUE) {
      const partialState = state;
      partialState.size = 0;
      partialState.map = void 0;
      partialState.readCount = 0;
      partialState.type = void 0;
    }
    this.stackHeadPosition--;
  }
  reset() {
    this.stack.length = 0;
    this.stackHeadPosition = -1;
  }
};
var HEAD_BYTE_REQUIRED = -1;
var EMPTY_VIEW = new DataView(new ArrayBuffer(0));
var EMPTY_BYTES = new Uint8Array(EMPTY_VIEW.buffer);
try {
  EMPTY_VIEW.getInt8(0);
} catch (e) {
  if (!(e instanceof RangeError)) {
    throw new Error("This module is not supported in the current JavaScript engine because DataView does not throw RangeError on out-of-bounds access");
  }
}
var MORE_DATA = new RangeError("Insufficient data");
var sharedCachedKeyDecoder = new CachedKeyDecoder();
var Decoder = class _Decoder {
  constructor(options) {
    __publicField(this, "extensionCodec");
    __publicField(this, "context");
    __publicField(this, "useBigInt64");
    __publicField(this, "rawStrings");
    __publicField(this, "maxStrLength");
    __publicField(this, "maxBinLength");
    __publicField(this, "maxArrayLength");
    __publicField(this, "maxMapLength");
    __publicField(this, "maxExtLength");
    __publicField(this, "keyDecoder");
    __publicField(this, "mapKeyConverter");
    __publicField(this, "totalPos", 0);
    __publicField(this, "pos", 0);
    __publicField(this, "view", EMPTY_VIEW);
    __publicField(this, "bytes", EMPTY_BYTES);
    __publicField(this, "headByte", HEAD_BYTE_REQUIRED);
    __publicField(this, "stack", new StackPool());
    __publicField(this, "entered", false);
    this.extensionCodec = options?.extensionCodec ?? ExtensionCodec.defaultCodec;
    this.context = options?.context;
    this.useBigInt64 = options?.useBigInt64 ?? false;
    this.rawStrings = options?.rawStrings ?? false;
    this.maxStrLength = options?.maxStrLength ?? UINT32_MAX;
    this.maxBinLength = options?.maxBinLength ?? UINT32_MAX;
    this.maxArrayLength = options?.maxArrayLength ?? UINT32_MAX;
    this.maxMapLength = options?.maxMapLength ?? UINT32_MAX;
    this.maxExtLength = options?.maxExtLength ?? UINT32_MAX;
    this.keyDecoder = options?.keyDecoder !== void 0 ? options.keyDecoder : sharedCachedKeyDecoder;
    this.mapKeyConverter = options?.mapKeyConverter ?? mapKeyConverter;
  }
  clone() {
    return new _Decoder({
      extensionCodec: this.extensionCodec,
      context: this.context,
      useBigInt64: this.useBigInt64,
      rawStrings: this.rawStrings,
      maxStrLength: this.maxStrLength,
      maxBinLength: this.maxBinLength,
      maxArrayLength: this.maxArrayLength,
      maxMapLength: this.maxMapLength,
      maxExtLength: this.maxExtLength,
      keyDecoder: this.keyDecoder
    });
  }
  reinitializeState() {
    this.totalPos = 0;
    this.headByte = HEAD_BYTE_REQUIRED;
    this.stack.reset();
  }
  setBuffer(buffer) {
    const bytes = ensureUint8Array(buffer);
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
  }
  appendBuffer(buffer) {
    if (this.headByte === HEAD_BYTE_REQUIRED && !this.hasRemaining(1)) {
      this.setBuffer(buffer);
    } else {
      const remainingData = this.bytes.subarray(this.pos);
      const newData = ensureUint8Array(buffer);
      const newBuffer = new Uint8Array(remainingData.length + newData.length);
      newBuffer.set(remainingData);
      newBuffer.set(newData, remainingData.length);
      this.setBuffer(newBuffer);
    }
  }
  hasRemaining(size) {
    return this.view.byteLength - this.pos >= size;
  }
  createExtraByteError(posToShow) {
    const { view, pos } = this;
    return new RangeError(`Extra ${view.byteLength - pos} of ${view.byteLength} byte(s) found at buffer[${posToShow}]`);
  }
  /**
   * @throws {@link DecodeError}
   * @throws {@link RangeError}
   */
  decode(buffer) {
    if (this.entered) {
      const instance = this.clone();
      return instance.decode(buffer);
    }
    try {
      this.entered = true;
      this.reinitializeState();
      this.setBuffer(buffer);
      const object = this.doDecodeSync();
      if (this.hasRemaining(1)) {
        throw this.createExtraByteError(this.pos);
      }
      return object;
    } finally {
      this.entered = false;
    }
  }
  *decodeMulti(buffer) {
    if (this.entered) {
      const instance = this.clone();
      yield* instance.decodeMulti(buffer);
      return;
    }
    try {
      this.entered = true;
      this.reinitializeState();
      this.setBuffer(buffer);
      while (this.hasRemaining(1)) {
        yield this.doDecodeSync();
      }
    } finally {
      this.entered = false;
    }
  }
  async decodeAsync(stream) {
    if (this.entered) {
      const instance = this.clone();
      return instance.decodeAsync(stream);
    }
    try {
      this.entered = true;
      let decoded = false;
      let object;
      for await (const buffer of stream) {
        if (decoded) {
          this.entered = false;
          throw this.createExtraByteError(this.totalPos);
        }
        this.appendBuffer(buffer);
        try {
          object = this.doDecodeSync();
          decoded = true;
        } catch (e) {
          if (!(e instanceof RangeError)) {
            throw e;
          }
        }
        this.totalPos += this.pos;
      }
      if (decoded) {
        if (this.hasRemaining(1)) {
          throw this.createExtraByteError(this.totalPos);
        }
        return object;
      }
      const { headByte, pos, totalPos } = this;
      throw new RangeError(`Insufficient data in parsing ${prettyByte(headByte)} at ${totalPos} (${pos} in the current buffer)`);
    } finally {
      this.entered = false;
    }
  }
  decodeArrayStream(stream) {
    return this.decodeMultiAsync(stream, true);
  }
  decodeStream(stream) {
    return this.decodeMultiAsync(stream, false);
  }
  async *decodeMultiAsync(stream, isArray) {
    if (this.entered) {
      const instance = this.clone();
      yield* instance.decodeMultiAsync(stream, isArray);
      return;
    }
    try {
      this.entered = true;
      let isArrayHeaderRequired = isArray;
      let arrayItemsLeft = -1;
      for await (const buffer of stream) {
        if (isArray && arrayItemsLeft === 0) {
          throw this.createExtraByteError(this.totalPos);
        }
        this.appendBuffer(buffer);
        if (isArrayHeaderRequired) {
          arrayItemsLeft = this.readArraySize();
          isArrayHeaderRequired = false;
          this.complete();
        }
        try {
          while (true) {
            yield this.doDecodeSync();
            if (--arrayItemsLeft === 0) {
              break;
            }
          }
        } catch (e) {
          if (!(e instanceof RangeError)) {
            throw e;
          }
        }
        this.totalPos += this.pos;
      }
    } finally {
      this.entered = false;
    }
  }
  doDecodeSync() {
    DECODE: while (true) {
      const headByte = this.readHeadByte();
      let object;
      if (headByte >= 224) {
        object = headByte - 256;
      } else if (headByte < 192) {
        if (headByte < 128) {
          object = headByte;
        } else if (headByte < 144) {
          const size = headByte - 128;
          if (size !== 0) {
            this.pushMapState(size);
            this.complete();
            continue DECODE;
          } else {
            object = {};
          }
        } else if (headByte < 160) {
          const size = headByte - 144;
          if (size !== 0) {
            this.pushArrayState(size);
            this.complete();
            continue DECODE;
          } else {
            object = [];
          }
        } else {
          const byteLength = headByte - 160;
          object = this.decodeString(byteLength, 0);
        }
      } else if (headByte === 192) {
        object = null;
      } else if (headByte === 194) {
        object = false;
      } else if (headByte === 195) {
        object = true;
      } else if (headByte === 202) {
        object = this.readF32();
      } else if (headByte === 203) {
        object = this.readF64();
      } else if (headByte === 204) {
        object = this.readU8();
      } else if (headByte === 205) {
        object = this.readU16();
      } else if (headByte === 206) {
        object = this.readU32();
      } else if (headByte === 207) {
        if (this.useBigInt64) {
          object = this.readU64AsBigInt();
        } else {
          object = this.readU64();
        }
      } else if (headByte === 208) {
        object = this.readI8();
      } else if (headByte === 209) {
        object = this.readI16();
      } else if (headByte === 210) {
        object = this.readI32();
      } else if (headByte === 211) {
        if (this.useBigInt64) {
          object = this.readI64AsBigInt();
        } else {
          object = this.readI64();
        }
      } else if (headByte === 217) {
        const byteLength = this.lookU8();
        object = this.decodeString(byteLength, 1);
      } else if (headByte === 218) {
        const byteLength = this.lookU16();
        object = this.decodeString(byteLength, 2);
      } else if (headByte === 219) {
        const byteLength = this.lookU32();
        object = this.decodeString(byteLength, 4);
      } else if (headByte === 220) {
        const size = this.readU16();
        if (size !== 0) {
          this.pushArrayState(size);
          this.complete();
          continue DECODE;
        } else {
          object = [];
        }
      } else if (headByte === 221) {
        const size = this.readU32();
        if (size !== 0) {
          this.pushArrayState(size);
          this.complete();
          continue DECODE;
        } else {
          object = [];
        }
      } else if (headByte === 222) {
        const size = this.readU16();
        if (size !== 0) {
          this.pushMapState(size);
          this.complete();
          continue DECODE;
        } else {
          object = {};
        }
      } else if (headByte === 223) {
        const size = this.readU32();
        if (size !== 0) {
          this.pushMapState(size);
          this.complete();
          continue DECODE;
        } else {
          object = {};
        }
      } else if (headByte === 196) {
        const size = this.lookU8();
        object = this.decodeBinary(size, 1);
      } else if (headByte === 197) {
        const size = this.lookU16();
        object = this.decodeBinary(size, 2);
      } else if (headByte === 198) {
        const size = this.lookU32();
        object = this.decodeBinary(size, 4);
      } else if (headByte === 212) {
        object = this.decodeExtension(1, 0);
      } else if (headByte === 213) {
        object = this.decodeExtension(2, 0);
      } else if (headByte === 214) {
        object = this.decodeExtension(4, 0);
      } else if (headByte === 215) {
        object = this.decodeExtension(8, 0);
      } else if (headByte === 216) {
        object = this.decodeExtension(16, 0);
      } else if (headByte === 199) {
        const size = this.lookU8();
        object = this.decodeExtension(size, 1);
      } else if (headByte === 200) {
        const size = this.lookU16();
        object = this.decodeExtension(size, 2);
      } else if (headByte === 201) {
        const size = this.lookU32();
        object = this.decodeExtension(size, 4);
      } else {
        throw new DecodeError(`Unrecognized type byte: ${prettyByte(headByte)}`);
      }
      this.complete();
      const stack = this.stack;
      while (stack.length > 0) {
        const state = stack.top();
        if (state.type === STATE_ARRAY) {
          state.array[state.position] = object;
          state.position++;
          if (state.position === state.size) {
            object = state.array;
            stack.release(state);
          } else {
            continue DECODE;
          }
        } else if (state.type === STATE_MAP_KEY) {
          if (object === "__proto__") {
            throw new DecodeError("The key __proto__ is not allowed");
          }
          state.key = this.mapKeyConverter(object);
          state.type = STATE_MAP_VALUE;
          continue DECODE;
        } else {
          state.map[state.key] = object;
          state.readCount++;
          if (state.readCount === state.size) {
            object = state.map;
            stack.release(state);
          } else {
            state.key = null;
            state.type = STATE_MAP_KEY;
            continue DECODE;
          }
        }
      }
      return object;
    }
  }
  readHeadByte() {
    if (this.headByte === HEAD_BYTE_REQUIRED) {
      this.headByte = this.readU8();
    }
    return this.headByte;
  }
  complete() {
    this.headByte = HEAD_BYTE_REQUIRED;
  }
  readArraySize() {
    const headByte = this.readHeadByte();
    switch (headByte) {
      case 220:
        return this.readU16();
      case 221:
        return this.readU32();
      default: {
        if (headByte < 160) {
          return headByte - 144;
        } else {
          throw new DecodeError(`Unrecognized array type byte: ${prettyByte(headByte)}`);
        }
      }
    }
  }
  pushMapState(size) {
    if (size > this.maxMapLength) {
      throw new DecodeError(`Max length exceeded: map length (${size}) > maxMapLengthLength (${this.maxMapLength})`);
    }
    this.stack.pushMapState(size);
  }
  pushArrayState(size) {
    if (size > this.maxArrayLength) {
      throw new DecodeError(`Max length exceeded: array length (${size}) > maxArrayLength (${this.maxArrayLength})`);
    }
    this.stack.pushArrayState(size);
  }
  decodeString(byteLength, headerOffset) {
    if (!this.rawStrings || this.stateIsMapKey()) {
      return this.decodeUtf8String(byteLength, headerOffset);
    }
    return this.decodeBinary(byteLength, headerOffset);
  }
  /**
   * @throws {@link RangeError}
   */
  decodeUtf8String(byteLength, headerOffset) {
    if (byteLength > this.maxStrLength) {
      throw new DecodeError(`Max length exceeded: UTF-8 byte length (${byteLength}) > maxStrLength (${this.maxStrLength})`);
    }
    if (this.bytes.byteLength < this.pos + headerOffset + byteLength) {
      throw MORE_DATA;
    }
    const offset = this.pos + headerOffset;
    let object;
    if (this.stateIsMapKey() && this.keyDecoder?.canBeCached(byteLength)) {
      object = this.keyDecoder.decode(this.bytes, offset, byteLength);
    } else {
      object = utf8Decode(this.bytes, offset, byteLength);
    }
    this.pos += headerOffset + byteLength;
    return object;
  }
  stateIsMapKey() {
    if (this.stack.length > 0) {
      const state = this.stack.top();
      return state.type === STATE_MAP_KEY;
    }
    return false;
  }
  /**
   * @throws {@link RangeError}
   */
  decodeBinary(byteLength, headOffset) {
    if (byteLength > this.maxBinLength) {
      throw new DecodeError(`Max length exceeded: bin length (${byteLength}) > maxBinLength (${this.maxBinLength})`);
    }
    if (!this.hasRemaining(byteLength + headOffset)) {
      throw MORE_DATA;
    }
    const offset = this.pos + headOffset;
    const object = this.bytes.subarray(offset, offset + byteLength);
    this.pos += headOffset + byteLength;
    return object;
  }
  decodeExtension(size, headOffset) {
    if (size > this.maxExtLength) {
      throw new DecodeError(`Max length exceeded: ext length (${size}) > maxExtLength (${this.maxExtLength})`);
    }
    const extType = this.view.getInt8(this.pos + headOffset);
    const data = this.decodeBinary(
      size,
      headOffset + 1
      /* extType */
    );
    return this.extensionCodec.decode(data, extType, this.context);
  }
  lookU8() {
    return this.view.getUint8(this.pos);
  }
  lookU16() {
    return this.view.getUint16(this.pos);
  }
  lookU32() {
    return this.view.getUint32(this.pos);
  }
  readU8() {
    const value = this.view.getUint8(this.pos);
    this.pos++;
    return value;
  }
  readI8() {
    const value = this.view.getInt8(this.pos);
    this.pos++;
    return value;
  }
  readU16() {
    const value = this.view.getUint16(this.pos);
    this.pos += 2;
    return value;
  }
  readI16() {
    const value = this.view.getInt16(this.pos);
    this.pos += 2;
    return value;
  }
  readU32() {
    const value = this.view.getUint32(this.pos);
    this.pos += 4;
    return value;
  }
  readI32() {
    const value = this.view.getInt32(this.pos);
    this.pos += 4;
    return value;
  }
  readU64() {
    const value = getUint64(this.view, this.pos);
    this.pos += 8;
    return value;
  }
  readI64() {
    const value = getInt64(this.view, this.pos);
    this.pos += 8;
    return value;
  }
  readU64AsBigInt() {
    const value = this.view.getBigUint64(this.pos);
    this.pos += 8;
    return value;
  }
  readI64AsBigInt() {
    const value = this.view.getBigInt64(this.pos);
    this.pos += 8;
    return value;
  }
  readF32() {
    const value = this.view.getFloat32(this.pos);
    this.pos += 4;
    return value;
  }
  readF64() {
    const value = this.view.getFloat64(this.pos);
    this.pos += 8;
    return value;
  }
};

// node_modules/@msgpack/msgpack/dist.esm/decode.mjs
function decode(buffer, options) {
  const decoder = new Decoder(options);
  return decoder.decode(buffer);
}

// src/scorehub.js
function mergePatch(target, patch) {
  if (!isPlainObject(patch)) {
    return patch;
  }
  const out = isPlainObject(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) {
      delete out[key];
    } else {
      out[key] = mergePatch(out[key], value);
    }
  }
  return out;
}
function isPlainObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}
function backoffDelay(attempt, { baseMs = 500, maxMs = 15e3, random = Math.random } = {}) {
  const window = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(window / 2 + random() * (window / 2));
}
function decodeFrame(data) {
  if (typeof data === "string") {
    return JSON.parse(data);
  }
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  return decode(bytes);
}
var GameStore = class {
  constructor() {
    this.games = /* @__PURE__ */ new Map();
    this.watchers = /* @__PURE__ */ new Map();
  }
  /** How many fans watch `game` (over every node of the hub), or `undefined`. */
  watching(game) {
    return this.watchers.get(game);
  }
  /** Records a count of fans for `game`; whether it changed. */
  setWatching(game, n) {
    if (typeof n !== "number" || !Number.isFinite(n) || n < 0) return false;
    if (this.watchers.get(game) === n) return false;
    this.watchers.set(game, n);
    return true;
  }
  /** The state held for `game`, or `undefined`. */
  get(game) {
    return this.games.get(game)?.state;
  }
  /** The last seq held for `game`, or `undefined`. */
  seq(game) {
    return this.games.get(game)?.seq;
  }
  /**
   * `{id: seq}` for every game with a usable state: what a resume sends as
   * `since`. Games waiting for a snapshot are left out, so they get one.
   */
  since() {
    const out = {};
    for (const [id, g] of this.games) {
      if (!g.resyncing && g.state !== void 0) {
        out[id] = g.seq;
      }
    }
    return out;
  }
  /** Forgets a game (after an unsubscribe). */
  delete(game) {
    this.games.delete(game);
    this.watchers.delete(game);
  }
  /** Applies one decoded frame; see the class doc for the result. */
  apply(frame) {
    switch (frame.t) {
      case "s": {
        const held = this.games.get(frame.g);
        const prev = held?.state;
        this.games.set(frame.g, { seq: frame.q, state: frame.d, resyncing: false });
        const out = { type: "snapshot", game: frame.g, seq: frame.q, state: frame.d, prev };
        if (this.setWatching(frame.g, frame.n)) out.watching = frame.n;
        return out;
      }
      case "o":
        if (!this.setWatching(frame.g, frame.n)) return { type: "unchanged", game: frame.g };
        return { type: "occupancy", game: frame.g, watching: frame.n };
      case "d": {
        const held = this.games.get(frame.g);
        if (held === void 0) {
          this.games.set(frame.g, { seq: 0, state: void 0, resyncing: true });
          return { type: "gap", game: frame.g, seq: frame.q, expected: void 0 };
        }
        if (held.resyncing) {
          return { type: "resyncing", game: frame.g, seq: frame.q };
        }
        if (frame.q <= held.seq) {
          return { type: "stale", game: frame.g, seq: frame.q };
        }
        if (frame.q !== held.seq + 1) {
          held.resyncing = true;
          return { type: "gap", game: frame.g, seq: frame.q, expected: held.seq + 1 };
        }
        const prev = held.state;
        held.state = mergePatch(prev, frame.d);
        held.seq = frame.q;
        return {
          type: "diff",
          game: frame.g,
          seq: frame.q,
          state: held.state,
          prev,
          patch: frame.d,
          ts: frame.ts
        };
      }
      case "e":
        return { type: "error", game: frame.g, code: frame.code, msg: frame.msg };
      case "p":
        return { type: "pong" };
      default:
        return { type: "unknown", frame };
    }
  }
};
function wsUrl(url, base = globalThis.location?.href) {
  const u = new URL(url ?? "/v1/ws", base);
  if (u.protocol === "http:") u.protocol = "ws:";
  if (u.protocol === "https:") u.protocol = "wss:";
  if (u.pathname === "/" || u.pathname === "") u.pathname = "/v1/ws";
  return u.toString();
}
function sseUrl(url, base = globalThis.location?.href) {
  const u = new URL(url ?? "/v1/sse", base);
  if (u.protocol === "ws:") u.protocol = "http:";
  if (u.protocol === "wss:") u.protocol = "https:";
  if (u.pathname === "/" || u.pathname === "" || u.pathname === "/v1/ws") u.pathname = "/v1/sse";
  return u.toString();
}
function sseStreamUrl(base, { games, leagues, since }) {
  const u = new URL(base);
  if (games.length) u.searchParams.set("games", games.join(","));
  if (leagues.length) u.searchParams.set("leagues", leagues.join(","));
  const id = Object.entries(since).map(([g, q]) => `${g}:${q}`).join(",");
  if (id) u.searchParams.set("last_event_id", id);
  return u.toString();
}
var uniq = (xs) => [...new Set(xs ?? [])];
function connect(url, opts = {}) {
  return new Client(url, opts);
}
var Client = class {
  constructor(url, opts = {}) {
    this.url = wsUrl(url);
    this.opts = {
      baseDelayMs: opts.baseDelayMs ?? 500,
      maxDelayMs: opts.maxDelayMs ?? 15e3,
      pingMs: opts.pingMs ?? 2e4
    };
    this.WebSocket = opts.WebSocket ?? globalThis.WebSocket;
    this.EventSource = opts.EventSource ?? globalThis.EventSource;
    this.sseUrl = sseUrl(url);
    this.mode = opts.transport ?? "auto";
    this.transport = this.mode === "sse" ? "sse" : "websocket";
    this.es = null;
    this.wantGames = new Set(uniq(opts.games));
    this.wantLeagues = new Set(uniq(opts.leagues));
    this.store = new GameStore();
    this.state = "connecting";
    this.skewMs = 0;
    this.skewSamples = [];
    this.replayUntil = 0;
    this.heldById = /* @__PURE__ */ new Set();
    this.attempt = 0;
    this.ws = null;
    this.listeners = /* @__PURE__ */ new Map();
    this.timers = { retry: null, ping: null, stable: null };
    this.lastHeard = 0;
    this.closed = false;
    this.onOnline = () => {
      if (this.timers.retry !== null) {
        clearTimeout(this.timers.retry);
        this.timers.retry = null;
        this.open();
      }
    };
    this.onOffline = () => {
      if (this.state !== "live") this.setState("offline");
    };
    globalThis.addEventListener?.("online", this.onOnline);
    globalThis.addEventListener?.("offline", this.onOffline);
    this.open();
  }
  /**
   * Listens to an event (see the class doc).
   * @param {string} type
   * @param {(detail: object) => void} fn
   * @returns {() => void} removes the listener
   */
  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, /* @__PURE__ */ new Set());
    this.listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }
  /** Removes a listener added with {@link Client#on}. */
  off(type, fn) {
    this.listeners.get(type)?.delete(fn);
  }
  /** The state held for `game`, or `undefined`. */
  get(game) {
    return this.store.get(game);
  }
  /**
   * How many fans watch `game` over every node of the hub, as last heard
   * (occupancy frames, at most one a second, and snapshots), or `undefined`
   * before the hub said.
   * @param {string} game
   * @returns {number | undefined}
   */
  watching(game) {
    return this.store.watching(game);
  }
  /** A `Map` of game id -> state for every game held. */
  all() {
    const out = /* @__PURE__ */ new Map();
    for (const [id, g] of this.store.games) {
      if (g.state !== void 0) out.set(id, g.state);
    }
    return out;
  }
  /** The hub's clock now, in Unix ms, as far as this client can tell. */
  serverNow() {
    return Date.now() + this.skewMs;
  }
  /**
   * Adds games and leagues to the subscription (kept across reconnects).
   * @param {{games?: string[], leagues?: string[]}} what
   */
  subscribe({ games = [], leagues = [] } = {}) {
    uniq(games).forEach((id) => this.heldById.delete(id));
    const g = uniq(games).filter((id) => !this.wantGames.has(id));
    const l = uniq(leagues).filter((id) => !this.wantLeagues.has(id));
    g.forEach((id) => this.wantGames.add(id));
    l.forEach((id) => this.wantLeagues.add(id));
    if (g.length || l.length) {
      if (this.transport === "sse") this.reopen();
      else this.send({ op: "sub", games: g, leagues: l });
    }
  }
  /**
   * Removes games and leagues from the subscription and forgets their state.
   * @param {{games?: string[], leagues?: string[]}} what
   */
  unsubscribe({ games = [], leagues = [] } = {}) {
    const dropped = uniq(games).filter((id) => this.wantGames.delete(id));
    const l = uniq(leagues).filter((id) => this.wantLeagues.delete(id));
    const g = dropped.filter((id) => {
      if (!this.wants(id)) return true;
      this.heldById.add(id);
      return false;
    });
    for (const id of [...this.heldById]) {
      if (!this.wants(id)) {
        this.heldById.delete(id);
        g.push(id);
      }
    }
    if (!g.length && !l.length) return;
    this.send({ op: "unsub", games: g, leagues: l });
    for (const id of [...this.store.games.keys()]) {
      if (!this.wants(id)) this.store.delete(id);
    }
    if (this.transport === "sse") this.reopen();
  }
  /** Whether `game` is covered by the current subscription. */
  wants(game) {
    return this.wantGames.has(game) || this.wantLeagues.has(game.split(":")[0]);
  }
  /** Closes the connection for good. */
  close() {
    this.closed = true;
    this.clearTimers();
    globalThis.removeEventListener?.("online", this.onOnline);
    globalThis.removeEventListener?.("offline", this.onOffline);
    this.drop(1e3, "client closed");
    this.setState("closed");
  }
  // --- internals -----------------------------------------------------------
  emit(type, detail) {
    for (const fn of [...this.listeners.get(type) ?? []]) {
      try {
        fn(detail);
      } catch (err) {
        setTimeout(() => {
          throw err;
        });
      }
    }
  }
  setState(state, extra = {}) {
    if (this.state === state && !extra.delayMs) return;
    this.state = state;
    this.emit("connection", { state, attempt: this.attempt, transport: this.transport, ...extra });
  }
  send(msg) {
    if (this.ws && this.ws.readyState === 1) {
      this.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }
  clearTimers() {
    for (const k of Object.keys(this.timers)) {
      clearTimeout(this.timers[k]);
      clearInterval(this.timers[k]);
      this.timers[k] = null;
    }
  }
  open() {
    if (this.closed) return;
    this.timers.retry = null;
    if (this.state !== "reconnecting" && this.state !== "offline") this.setState("connecting");
    if (this.transport === "sse" || this.mode === "auto" && typeof this.WebSocket !== "function") {
      this.openSse();
      return;
    }
    let ws;
    try {
      ws = new this.WebSocket(this.url);
    } catch (err) {
      if (this.fallBack()) return;
      this.emit("error", { code: "connect_failed", msg: String(err?.message ?? err) });
      this.retry();
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.opened();
      this.send({
        op: "sub",
        games: [...this.wantGames],
        leagues: [...this.wantLeagues],
        since: this.store.since()
      });
      this.timers.stable = setTimeout(() => {
        this.attempt = 0;
      }, 5e3);
      this.timers.ping = setInterval(() => this.checkAlive(), Math.max(1e3, this.opts.pingMs / 2));
    };
    ws.onmessage = (ev) => this.onFrame(ev.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (!opened && this.fallBack()) return;
      this.retry();
    };
    ws.onerror = () => {
    };
  }
  /** What every new connection does first, on either transport. */
  opened() {
    this.lastHeard = Date.now();
    this.setState("live");
    this.heldById.clear();
    this.replayUntil = Date.now() + 2e3;
  }
  /** In `auto`, switches to SSE after a WebSocket failed to open; whether it did. */
  fallBack() {
    if (this.mode !== "auto" || typeof this.EventSource !== "function" || this.closed) return false;
    this.transport = "sse";
    this.openSse();
    return true;
  }
  /**
   * Opens the SSE stream for everything wanted, resuming at the seqs held.
   * The browser reconnects a dropped stream by itself (its `Last-Event-ID`
   * resumes every game); a stream it gave up on (an HTTP error) is retried
   * with backoff, over the WebSocket again in `auto` when it never opened.
   */
  openSse() {
    this.transport = "sse";
    if (!this.wantGames.size && !this.wantLeagues.size) {
      this.opened();
      return;
    }
    let es;
    try {
      es = new this.EventSource(
        sseStreamUrl(this.sseUrl, {
          games: [...this.wantGames],
          leagues: [...this.wantLeagues],
          since: this.store.since()
        })
      );
    } catch (err) {
      this.emit("error", { code: "connect_failed", msg: String(err?.message ?? err) });
      this.retry();
      return;
    }
    this.es = es;
    let opened = false;
    es.onopen = () => {
      opened = true;
      this.opened();
      this.timers.stable = setTimeout(() => {
        this.attempt = 0;
      }, 5e3);
    };
    es.onmessage = (ev) => this.onFrame(ev.data);
    es.onerror = () => {
      if (this.es !== es) return;
      if (opened && es.readyState !== 2) {
        this.setState("reconnecting");
        return;
      }
      this.drop();
      if (!opened && this.mode === "auto") this.transport = "websocket";
      this.retry();
    };
  }
  /** Reopens the SSE stream (its subscriptions are fixed), resuming. */
  reopen() {
    this.drop();
    this.clearTimers();
    this.openSse();
  }
  checkAlive() {
    const quiet = Date.now() - this.lastHeard;
    if (quiet >= 2 * this.opts.pingMs) {
      this.drop(4e3, "no answer from the hub");
      this.retry();
    } else if (quiet >= this.opts.pingMs) {
      this.send({ op: "ping" });
    }
  }
  /** Abandons the current socket without waiting for its close event. */
  drop(code, reason) {
    const es = this.es;
    this.es = null;
    if (es) {
      es.onopen = es.onmessage = es.onerror = null;
      es.close();
    }
    const ws = this.ws;
    this.ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(code, reason);
    } catch {
    }
  }
  retry() {
    this.clearTimers();
    if (this.closed) return;
    const delayMs = backoffDelay(this.attempt, {
      baseMs: this.opts.baseDelayMs,
      maxMs: this.opts.maxDelayMs
    });
    this.attempt += 1;
    const offline = globalThis.navigator?.onLine === false;
    this.setState(offline ? "offline" : "reconnecting", { delayMs });
    this.timers.retry = setTimeout(() => this.open(), delayMs);
  }
  onFrame(data) {
    this.lastHeard = Date.now();
    let frame;
    try {
      frame = decodeFrame(data);
    } catch (err) {
      this.emit("error", { code: "bad_frame", msg: String(err?.message ?? err) });
      return;
    }
    if (frame === null || typeof frame !== "object") return;
    if (frame.t === "d" && typeof frame.ts === "number" && Date.now() >= this.replayUntil) {
      this.skewSamples.push(frame.ts - Date.now());
      if (this.skewSamples.length > 16) this.skewSamples.shift();
      const skew = Math.max(...this.skewSamples);
      this.skewMs = Math.abs(skew) > 1e3 ? skew : 0;
    }
    if ((frame.t === "s" || frame.t === "d" || frame.t === "o") && !this.wants(frame.g)) {
      return;
    }
    const r = this.store.apply(frame);
    switch (r.type) {
      case "snapshot":
      case "diff":
        this.emit(r.type, r);
        this.emit("state", { ...r, kind: r.type });
        if (r.watching !== void 0) this.emit("occupancy", { game: r.game, watching: r.watching });
        break;
      case "occupancy":
        this.emit("occupancy", { game: r.game, watching: r.watching });
        break;
      case "gap":
        this.emit("gap", r);
        if (this.es) {
          this.reopen();
          break;
        }
        this.send({ op: "unsub", games: [r.game], leagues: [] });
        this.send({ op: "sub", games: [r.game], leagues: [] });
        if (!this.wantGames.has(r.game)) this.heldById.add(r.game);
        break;
      case "error":
        this.emit("error", r);
        break;
      default:
        break;
    }
  }
};
export {
  Client,
  GameStore,
  backoffDelay,
  connect,
  decodeFrame,
  mergePatch,
  sseStreamUrl,
  sseUrl,
  wsUrl
};
