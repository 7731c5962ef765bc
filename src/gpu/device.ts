/**
 * WebGPU device acquisition and the few helpers every operation needs: buffer upload and
 * readback, compute pipelines cached by kernel file and override constants, and a batch
 * that records many dispatches, submits once and reads back once. Each round trip costs
 * milliseconds on software adapters, so batching is the main lever.
 *
 * @module
 */
import { GpuError } from "../errors.ts";

/** Options of {@linkcode GpuContext.create}. */
export interface GpuOptions {
  /** Request the "shader-f16" feature when the adapter has it. Default true. */
  f16?: boolean;
}

/** Override constants of a WGSL pipeline (`override` declarations). */
export type KernelConstants = Record<string, number>;

/** A storage binding: a buffer, optionally a byte range of it. */
export type Binding = GPUBuffer | { buffer: GPUBuffer; offset?: number; size?: number };

const kernelSources = new Map<string, Promise<string>>();

/**
 * Loads `kernels/NAME.wgsl` (cached), from disk or over HTTP when the package is remote.
 *
 * @param name Kernel file name without extension.
 */
export function loadKernelSource(name: string): Promise<string> {
  let source = kernelSources.get(name);
  if (!source) {
    const url = new URL(`../../kernels/${name}.wgsl`, import.meta.url);
    source = url.protocol === "file:" ? Deno.readTextFile(url) : fetch(url).then((r) => r.text());
    kernelSources.set(name, source);
  }
  return source;
}

/**
 * A WebGPU device with the adapter's full limits, and the pipeline cache.
 *
 * @example Upload and read back
 * ```ts ignore
 * const gpu = await GpuContext.create();
 * const buf = gpu.upload(new Float32Array([1, 2, 3]));
 * const back = await gpu.readF32(buf);
 * gpu.destroy();
 * ```
 */
export class GpuContext {
  /** The device. */
  readonly device: GPUDevice;
  /** The adapter's description ("llvmpipe ..." on Mesa's software Vulkan). */
  readonly adapterName: string;
  /** Whether WGSL `enable f16;` is available. */
  readonly hasF16: boolean;
  #pipelines = new Map<string, Promise<GPUComputePipeline>>();
  #owned = new Set<GPUBuffer>();

  private constructor(device: GPUDevice, adapterName: string, hasF16: boolean) {
    this.device = device;
    this.adapterName = adapterName;
    this.hasF16 = hasF16;
  }

  /**
   * Acquires an adapter and a device with the adapter's limits.
   *
   * @param options Feature requests.
   * @throws {GpuError} When WebGPU or an adapter is missing, with how to install one.
   */
  static async create(options: GpuOptions = {}): Promise<GpuContext> {
    if (!("gpu" in navigator) || !navigator.gpu) {
      throw new GpuError("WebGPU is not available in this runtime: run with Deno 2 or later");
    }
    const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
    if (!adapter) {
      throw new GpuError(
        "No WebGPU adapter found: install a GPU driver, or Mesa's software Vulkan driver " +
          "(Debian/Ubuntu: apt-get install -y mesa-vulkan-drivers)",
      );
    }
    const requiredLimits: Record<string, number> = {};
    for (const key in adapter.limits) {
      const value = (adapter.limits as unknown as Record<string, number>)[key];
      if (typeof value === "number") requiredLimits[key] = value;
    }
    const hasF16 = (options.f16 ?? true) && adapter.features.has("shader-f16");
    const device = await adapter.requestDevice({
      requiredLimits,
      requiredFeatures: hasF16 ? ["shader-f16"] : [],
    });
    device.addEventListener("uncapturederror", (event) => {
      console.error(`WebGPU error: ${(event as GPUUncapturedErrorEvent).error.message}`);
    });
    return new GpuContext(
      device,
      adapter.info?.description || adapter.info?.vendor || "unknown adapter",
      hasF16,
    );
  }

  /** The device's limits. */
  get limits(): GPUSupportedLimits {
    return this.device.limits;
  }

  /**
   * Creates a storage buffer of `byteLength` bytes (rounded up to 4), owned by this context.
   *
   * @param byteLength Size in bytes.
   * @param label Debug label.
   */
  createBuffer(byteLength: number, label = ""): GPUBuffer {
    const size = Math.max(4, Math.ceil(byteLength / 4) * 4);
    if (size > this.limits.maxBufferSize) {
      throw new GpuError(
        `Buffer ${label} of ${size} bytes exceeds the device's maxBufferSize ${this.limits.maxBufferSize}`,
      );
    }
    const buffer = this.device.createBuffer({
      label,
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    this.#owned.add(buffer);
    return buffer;
  }

  /**
   * Creates a storage buffer holding `data`.
   *
   * @param data Typed array to copy.
   * @param label Debug label.
   */
  upload(data: ArrayBufferView, label = ""): GPUBuffer {
    const buffer = this.createBuffer(data.byteLength, label);
    this.write(buffer, data);
    return buffer;
  }

  /**
   * Writes `data` into `buffer` at `offset` bytes.
   *
   * @param buffer Destination.
   * @param data Source bytes (padded to a multiple of 4).
   * @param offset Byte offset, a multiple of 4.
   */
  write(buffer: GPUBuffer, data: ArrayBufferView, offset = 0): void {
    // Deno 2.9.6 panics on a zero-length writeBuffer, and there is nothing to copy anyway.
    if (data.byteLength === 0) return;
    let bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (bytes.byteLength % 4) {
      const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
      padded.set(bytes);
      bytes = padded;
    }
    this.device.queue.writeBuffer(buffer, offset, bytes as Uint8Array<ArrayBuffer>);
  }

  /**
   * Creates a uniform buffer from 32-bit words (u32 or f32 views over one buffer).
   *
   * @param words Parameter words; callers lay them out as the kernel's `Params` struct.
   */
  uniform(words: Uint32Array<ArrayBuffer>): GPUBuffer {
    const size = Math.max(16, Math.ceil(words.byteLength / 16) * 16);
    const buffer = this.device.createBuffer({
      size,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    this.device.queue.writeBuffer(buffer, 0, words);
    this.#owned.add(buffer);
    return buffer;
  }

  /**
   * Returns the compute pipeline for `kernels/NAME.wgsl` with these override constants,
   * compiling it once per distinct (name, constants).
   *
   * @param name Kernel file name without extension.
   * @param constants WGSL override constants.
   */
  pipeline(name: string, constants: KernelConstants = {}): Promise<GPUComputePipeline> {
    const keys = Object.keys(constants).sort();
    const key = `${name}(${keys.map((k) => `${k}=${constants[k]}`).join(",")})`;
    let pipeline = this.#pipelines.get(key);
    if (!pipeline) {
      pipeline = this.#compile(name, key, constants);
      this.#pipelines.set(key, pipeline);
    }
    return pipeline;
  }

  async #compile(
    name: string,
    label: string,
    constants: KernelConstants,
  ): Promise<GPUComputePipeline> {
    const code = await loadKernelSource(name);
    const module = this.device.createShaderModule({ label: name, code });
    const info = await module.getCompilationInfo();
    const errors = info.messages.filter((m) => m.type === "error");
    if (errors.length) {
      throw new GpuError(
        `Kernel ${name}.wgsl failed to compile: ${
          errors.map((m) => `line ${m.lineNum}: ${m.message}`).join("; ")
        }`,
      );
    }
    this.device.pushErrorScope("validation");
    const pipeline = this.device.createComputePipeline({
      label,
      layout: "auto",
      compute: { module, entryPoint: "main", constants },
    });
    const error = await this.device.popErrorScope();
    if (error) throw new GpuError(`Pipeline ${label} is invalid: ${error.message}`);
    return pipeline;
  }

  /** Starts a batch of dispatches that is submitted once. */
  batch(): GpuBatch {
    return new GpuBatch(this);
  }

  /**
   * Copies `buffer` (or its first `byteLength` bytes) back to the CPU.
   *
   * @param buffer Source buffer.
   * @param byteLength Bytes to read; default the whole buffer.
   */
  async readBytes(buffer: GPUBuffer, byteLength = buffer.size): Promise<Uint8Array> {
    const batch = this.batch();
    const handle = batch.read(buffer, byteLength);
    await batch.submit();
    return handle.bytes();
  }

  /**
   * Reads a buffer back as f32.
   *
   * @param buffer Source buffer.
   * @param count Number of floats; default the whole buffer.
   */
  async readF32(buffer: GPUBuffer, count = buffer.size / 4): Promise<Float32Array> {
    const bytes = await this.readBytes(buffer, count * 4);
    return new Float32Array(bytes.buffer, bytes.byteOffset, count);
  }

  /**
   * Destroys one buffer created by this context.
   *
   * @param buffer Buffer to free.
   */
  release(buffer: GPUBuffer): void {
    if (this.#owned.delete(buffer)) buffer.destroy();
  }

  /** Destroys every buffer this context created and the device. */
  destroy(): void {
    for (const buffer of this.#owned) buffer.destroy();
    this.#owned.clear();
    this.device.destroy();
  }
}

/** A pending readback of a batch; its bytes are available after `submit()` resolves. */
export interface ReadHandle {
  /** Returns the copied bytes; throws before the batch has been submitted. */
  bytes(): Uint8Array;
  /** Returns the copied bytes as f32. */
  f32(): Float32Array;
}

/**
 * Records compute dispatches and buffer copies into one command encoder, submits them
 * together and maps every requested readback after a single queue round trip.
 */
export class GpuBatch {
  #gpu: GpuContext;
  #encoder: GPUCommandEncoder;
  #reads: { staging: GPUBuffer; size: number; result: Uint8Array | null }[] = [];
  #temporaries: GPUBuffer[] = [];

  /**
   * Opens a command encoder on the context's device.
   *
   * @param gpu Owning context.
   */
  constructor(gpu: GpuContext) {
    this.#gpu = gpu;
    this.#encoder = gpu.device.createCommandEncoder();
  }

  /**
   * Records one dispatch of `pipeline` with bindings 0..n-1 of group 0.
   *
   * @param pipeline Compute pipeline from {@linkcode GpuContext.pipeline}.
   * @param bindings Buffers in binding order.
   * @param workgroups Workgroup counts [x, y?, z?]; each must be at most maxComputeWorkgroupsPerDimension.
   */
  dispatch(
    pipeline: GPUComputePipeline,
    bindings: Binding[],
    workgroups: [number, number?, number?],
  ): void {
    const max = this.#gpu.limits.maxComputeWorkgroupsPerDimension;
    const [x, y = 1, z = 1] = workgroups;
    if (x > max || y > max || z > max) {
      throw new GpuError(
        `Dispatch ${pipeline.label} of [${x}, ${y}, ${z}] workgroups exceeds maxComputeWorkgroupsPerDimension ${max}`,
      );
    }
    if (x === 0 || y === 0 || z === 0) return;
    const bindGroup = this.#gpu.device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: bindings.map((b, i) => ({
        binding: i,
        resource: "buffer" in b ? b : { buffer: b },
      })),
    });
    const pass = this.#encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, z);
    pass.end();
  }

  /**
   * Records a uniform buffer that is destroyed when the batch is submitted.
   *
   * @param words Parameter words.
   */
  uniform(words: Uint32Array<ArrayBuffer>): GPUBuffer {
    const size = Math.max(16, Math.ceil(words.byteLength / 16) * 16);
    const buffer = this.#gpu.device.createBuffer({
      size,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    this.#gpu.device.queue.writeBuffer(buffer, 0, words);
    this.#temporaries.push(buffer);
    return buffer;
  }

  /**
   * Records a buffer-to-buffer copy.
   *
   * @param src Source buffer.
   * @param srcOffset Byte offset in the source.
   * @param dst Destination buffer.
   * @param dstOffset Byte offset in the destination.
   * @param size Bytes to copy (a multiple of 4).
   */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, size: number): void {
    this.#encoder.copyBufferToBuffer(src, srcOffset, dst, dstOffset, size);
  }

  /**
   * Records a readback of `buffer`'s first `byteLength` bytes.
   *
   * @param buffer Source buffer.
   * @param byteLength Bytes to read; default the whole buffer.
   * @param offset Byte offset in the source (a multiple of 4).
   */
  read(buffer: GPUBuffer, byteLength = buffer.size, offset = 0): ReadHandle {
    const size = Math.ceil(byteLength / 4) * 4;
    const staging = this.#gpu.device.createBuffer({
      size,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    this.#encoder.copyBufferToBuffer(buffer, offset, staging, 0, size);
    const entry = { staging, size, result: null as Uint8Array | null };
    this.#reads.push(entry);
    const bytes = () => {
      if (!entry.result) throw new GpuError("Readback used before its batch was submitted");
      return entry.result.subarray(0, byteLength);
    };
    return {
      bytes,
      f32: () => {
        const b = bytes();
        return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
      },
    };
  }

  /** Submits every recorded command and completes every readback. */
  async submit(): Promise<void> {
    const device = this.#gpu.device;
    device.queue.submit([this.#encoder.finish()]);
    await Promise.all(this.#reads.map((r) => r.staging.mapAsync(GPUMapMode.READ)));
    for (const r of this.#reads) {
      r.result = new Uint8Array(r.staging.getMappedRange().slice(0));
      r.staging.unmap();
      r.staging.destroy();
    }
    if (!this.#reads.length) await device.queue.onSubmittedWorkDone();
    for (const b of this.#temporaries) b.destroy();
    this.#temporaries = [];
  }
}
