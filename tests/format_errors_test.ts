import assert from "node:assert/strict";
import { join } from "node:path";
import { loadHf } from "../src/formats/hf.ts";
import { writeHf } from "../src/formats/hf_writer.ts";
import { loadGguf } from "../src/formats/gguf_model.ts";
import { writeGguf } from "../src/formats/gguf_writer.ts";
import {
  SafetensorsFile,
  type TensorToWrite,
  writeSafetensors,
} from "../src/formats/safetensors.ts";
import { FormatError } from "../src/errors.ts";
import { tensorNames } from "../src/model/config.ts";
import type { LoadedModel } from "../src/model/model.ts";
import { MemoryWeightStore } from "../src/model/model.ts";
import { randomWeights, tinyConfig } from "./_helpers.ts";
import { freshPath, offsetAfter, tempDir } from "./_format_helpers.ts";

const CONFIG = tinyConfig();

/** Asserts one FormatError whose message names `file` and matches `pattern`. */
async function rejectsWith(
  load: () => Promise<LoadedModel>,
  file: string,
  pattern: RegExp,
): Promise<void> {
  await assert.rejects(async () => {
    const model = await load();
    model.weights.close();
  }, (err: Error) => {
    assert.ok(err instanceof FormatError, `${err.name}: ${err.message}`);
    assert.ok(err.message.startsWith(file), `"${err.message}" does not start with ${file}`);
    assert.match(err.message, pattern);
    assert.ok(!err.message.includes("\n"), "one line");
    return true;
  });
}

async function hfFixture(): Promise<string> {
  const dir = await freshPath("hf");
  await writeHf({ config: { ...CONFIG, ropeStyle: "half" }, weights: randomWeights(CONFIG) }, dir, {
    quiet: true,
  });
  return dir;
}

async function editConfig(dir: string, edit: (c: Record<string, unknown>) => void): Promise<void> {
  const path = join(dir, "config.json");
  const config = JSON.parse(await Deno.readTextFile(path));
  edit(config);
  await Deno.writeTextFile(path, JSON.stringify(config));
}

async function patchBytes(
  path: string,
  patch: (bytes: Uint8Array, view: DataView) => Uint8Array | void,
): Promise<void> {
  const bytes = await Deno.readFile(path);
  const out = patch(bytes, new DataView(bytes.buffer)) ?? bytes;
  await Deno.writeFile(path, out);
}

Deno.test("loadHf rejects a truncated safetensors file", async () => {
  const dir = await hfFixture();
  const path = join(dir, "model.safetensors");
  await patchBytes(path, (b) => b.subarray(0, b.length - 100));
  await rejectsWith(
    () => loadHf(dir),
    path,
    /lm_head\.weight: Tensor ends at byte \d+ beyond the file size \d+: the file is truncated/,
  );
});

Deno.test("loadHf rejects a safetensors file with a bad header length", async () => {
  const dir = await hfFixture();
  const path = join(dir, "model.safetensors");
  await patchBytes(path, (_, v) => v.setBigUint64(0, 0xffff_ffffn, true));
  await rejectsWith(() => loadHf(dir), path, /header length: .*not safetensors/);
});

Deno.test("loadHf rejects tensors that do not match config.json", async () => {
  const dir = await hfFixture();
  await editConfig(dir, (c) => c.intermediate_size = 48);
  await rejectsWith(
    () => loadHf(dir),
    join(dir, "model.safetensors"),
    /model\.layers\.0\.mlp\.gate_proj\.weight: Shape \[40,24\] does not match \[48,24\]/,
  );
});

Deno.test("loadHf rejects an unsupported dtype", async () => {
  const dir = await hfFixture();
  const path = join(dir, "model.safetensors");
  const file = await SafetensorsFile.open(path);
  const tensors: Record<string, TensorToWrite> = {};
  for (const [name, info] of file.tensors) {
    tensors[name] = { dtype: info.dtype, shape: info.shape, data: await file.readBytes(name) };
  }
  file.close();
  tensors[tensorNames.finalNorm].dtype = "I32";
  await writeSafetensors(path, tensors);
  await rejectsWith(
    () => loadHf(dir),
    path,
    /model\.norm\.weight: Unsupported dtype I32: expected F32, F16 or BF16/,
  );
});

Deno.test("loadHf rejects a missing config key", async () => {
  const dir = await hfFixture();
  await editConfig(dir, (c) => delete c.num_hidden_layers);
  await rejectsWith(() => loadHf(dir), join(dir, "config.json"), /num_hidden_layers: Missing key/);
});

Deno.test("loadHf rejects a directory without config.json", async () => {
  const dir = await tempDir();
  await rejectsWith(() => loadHf(dir), join(dir, "config.json"), /Missing config\.json/);
});

Deno.test("loadHf rejects a shard index that leaves the directory", async () => {
  const dir = await hfFixture();
  const index = { weight_map: { [tensorNames.embed]: "../model.safetensors" } };
  await Deno.writeTextFile(join(dir, "model.safetensors.index.json"), JSON.stringify(index));
  await rejectsWith(
    () => loadHf(dir),
    join(dir, "model.safetensors.index.json"),
    /Invalid shard name/,
  );
});

Deno.test("HF weight reads report NaN with the tensor name", async () => {
  const weights = randomWeights(CONFIG);
  const name = tensorNames.linear(1, "mlp.up_proj");
  (await weights.read(name))[5] = NaN;
  const dir = await freshPath("nan");
  await writeHf({ config: { ...CONFIG, ropeStyle: "half" }, weights }, dir, { quiet: true });
  const model = await loadHf(dir);
  try {
    await assert.rejects(() => model.weights.read(name), (err: Error) => {
      assert.ok(err instanceof FormatError);
      assert.ok(err.message.startsWith(join(dir, "model.safetensors")));
      assert.match(err.message, /mlp\.up_proj\.weight: Element 5 is NaN/);
      return true;
    });
  } finally {
    model.weights.close();
  }
});

async function ggufFixture(): Promise<string> {
  const path = await freshPath("m.gguf");
  await writeGguf({ config: CONFIG, weights: randomWeights(CONFIG) }, path, { quiet: true });
  return path;
}

Deno.test("loadGguf rejects a truncated file", async () => {
  const path = await ggufFixture();
  await patchBytes(path, (b) => b.subarray(0, b.length - 100));
  await rejectsWith(
    () => loadGguf(path),
    path,
    /output\.weight: Tensor ends at byte \d+ beyond the file size \d+: the file is truncated/,
  );
  let cut = 0;
  await patchBytes(path, (b) => b.subarray(0, cut = offsetAfter(b, "blk.1.attn_q.weight")));
  await rejectsWith(
    () => loadGguf(path),
    path,
    new RegExp(
      `blk\\.1\\.attn_q\\.weight: Needs 4 bytes at byte ${cut} but the file has ${cut}: the file is truncated`,
    ),
  );
  await patchBytes(path, (b) => b.subarray(0, 60));
  await rejectsWith(
    () => loadGguf(path),
    path,
    /tensor_count: 21 tensors exceed .* a file of 60 bytes can hold: the file is truncated/,
  );
});

Deno.test("loadGguf rejects a wrong magic number and version", async () => {
  const path = await ggufFixture();
  await patchBytes(path, (b) => void b.set(new TextEncoder().encode("GGML"), 0));
  await rejectsWith(() => loadGguf(path), path, /magic: Wrong magic 0x4c4d4747: expected "GGUF"/);
  await patchBytes(path, (b, v) => {
    b.set(new TextEncoder().encode("GGUF"), 0);
    v.setUint32(4, 0x03000000, true);
  });
  await rejectsWith(
    () => loadGguf(path),
    path,
    /version: Unsupported version 50331648 \(a big-endian file/,
  );
});

Deno.test("loadGguf rejects tensors that do not match the metadata", async () => {
  const path = await ggufFixture();
  // The u32 value follows the key and its 4-byte type id.
  await patchBytes(
    path,
    (b, v) => v.setUint32(offsetAfter(b, "llama.feed_forward_length") + 4, 48, true),
  );
  await rejectsWith(
    () => loadGguf(path),
    path,
    /blk\.0\.ffn_gate\.weight: Shape \[40,24\] \(ggml ne \[24,40\]\) does not match \[48,24\]/,
  );
});

Deno.test("loadGguf rejects an unsupported tensor type", async () => {
  const path = await ggufFixture();
  // After the name: u32 n_dims (2), two u64 dims, then the u32 type.
  await patchBytes(
    path,
    (b, v) => v.setUint32(offsetAfter(b, "blk.0.attn_q.weight") + 4 + 16, 12, true),
  );
  await rejectsWith(
    () => loadGguf(path),
    path,
    /blk\.0\.attn_q\.weight: Unsupported tensor type Q4_K: expected F32, F16, BF16 or Q8_0/,
  );
});

Deno.test("loadGguf rejects a missing config key", async () => {
  const path = await ggufFixture();
  await patchBytes(
    path,
    (b) =>
      void b.set(
        new TextEncoder().encode("llama.block_coun_"),
        offsetAfter(b, "llama.block_count") - 17,
      ),
  );
  await rejectsWith(() => loadGguf(path), path, /llama\.block_count: Missing key/);
});

Deno.test("loadGguf rejects counts beyond the limits before allocating", async () => {
  const path = await ggufFixture();
  await patchBytes(path, (_, v) => v.setBigUint64(8, 2n ** 40n, true));
  await rejectsWith(
    () => loadGguf(path),
    path,
    /tensor_count: 1099511627776 tensors exceed the limit/,
  );
  await patchBytes(path, (_, v) => {
    v.setBigUint64(8, 10n, true);
    v.setBigUint64(24, 2n ** 50n, true); // length of the first metadata key
  });
  await rejectsWith(
    () => loadGguf(path),
    path,
    /metadata entry 0 key: String of \d+ bytes exceeds the \d+-byte limit/,
  );
});

Deno.test("loadGguf rejects a misaligned tensor offset", async () => {
  const path = await ggufFixture();
  await patchBytes(
    path,
    (b, v) => v.setBigUint64(offsetAfter(b, "blk.0.attn_k.weight") + 4 + 16 + 4, 36n, true),
  );
  await rejectsWith(
    () => loadGguf(path),
    path,
    /blk\.0\.attn_k\.weight: Data offset 36 is not a multiple of the alignment 32/,
  );
});

Deno.test("loadGguf rejects an unsupported architecture", async () => {
  const path = await ggufFixture();
  await patchBytes(
    path,
    (b) =>
      void b.set(new TextEncoder().encode("gemma"), offsetAfter(b, "general.architecture") + 4 + 8),
  );
  await rejectsWith(
    () => loadGguf(path),
    path,
    /general\.architecture: Unsupported architecture "gemma"/,
  );
});

Deno.test("GGUF weight reads report NaN with the tensor name", async () => {
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  const source = randomWeights(CONFIG);
  for (const n of source.names()) {
    tensors.set(n, { shape: source.shape(n), data: await source.read(n) });
  }
  tensors.get(tensorNames.embed)!.data[3] = Infinity;
  const path = await freshPath("inf.gguf");
  await writeGguf({ config: CONFIG, weights: new MemoryWeightStore("mem", tensors) }, path, {
    quiet: true,
  });
  const model = await loadGguf(path);
  try {
    await assert.rejects(
      () => model.weights.read(tensorNames.embed),
      new RegExp(`^FormatError: ${path}: token_embd\\.weight: Element 3 is Infinity`),
    );
  } finally {
    model.weights.close();
  }
});

Deno.test("loadHf rejects an untied config without lm_head", async () => {
  const dir = await freshPath("tied");
  const config = { ...CONFIG, tiedEmbeddings: true, ropeStyle: "half" as const };
  await writeHf({ config, weights: randomWeights(config) }, dir, { quiet: true });
  await editConfig(dir, (c) => c.tie_word_embeddings = false);
  await rejectsWith(
    () => loadHf(dir),
    join(dir, "model.safetensors"),
    /lm_head\.weight: Missing tensor: set tie_word_embeddings to true/,
  );
});
