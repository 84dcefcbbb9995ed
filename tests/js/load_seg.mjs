// Load a DICOM-SEG the way OHIF 3 does (@cornerstonejs/adapters
// Cornerstone3D.Segmentation.createFromDICOMSegBuffer, which parses with dcmjs), headless.
//
//   node load_seg.mjs <requests.json>
//
// requests: a list of {"name", "seg": path, "out": folder, "source": {sopInstanceUID,
//           sopClassUID, seriesInstanceUID, rows, columns}, "assumeOrientation": [6] | null}
// The source image is described as cornerstone's own metadata provider describes a
// CR/DX without Image Orientation (Patient): default cosines [1,0,0]/[0,1,0].
// "assumeOrientation" adds a Shared Plane Orientation to a copy of the SEG (what the
// adapters require; see tests/test_seg_readers.py for why our SEG has none).
// Prints one JSON line per request: {name, dcmjs: {...}, adapters: {error} |
// {labelmaps: [...]}}; each label map's pixels go to <out>/labelmap_<n>.u8 (rows*columns
// bytes, value = segment number).
import fs from "node:fs";
import path from "node:path";
import dcmjs from "dcmjs";
import { metaData } from "@cornerstonejs/core";
import { adaptersSEG } from "@cornerstonejs/adapters";

const requests = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const sources = new Map();

function describeSource(type, imageId) {
  const source = sources.get(imageId);
  if (!source) return undefined;
  const modules = {
    imagePlaneModule: {
      rows: source.rows, columns: source.columns, frameOfReferenceUID: undefined,
      rowCosines: [1, 0, 0], columnCosines: [0, 1, 0],
      imageOrientationPatient: [1, 0, 0, 0, 1, 0], imagePositionPatient: [0, 0, 0],
      rowPixelSpacing: 1, columnPixelSpacing: 1, pixelSpacing: [1, 1],
    },
    generalSeriesModule: { seriesInstanceUID: source.seriesInstanceUID, modality: "CR" },
    generalImageModule: { sopInstanceUID: source.sopInstanceUID, instanceNumber: 1 },
    sopCommonModule: { sopInstanceUID: source.sopInstanceUID, sopClassUID: source.sopClassUID },
    imagePixelModule: {
      rows: source.rows, columns: source.columns, bitsAllocated: 16, bitsStored: 12,
      highBit: 11, samplesPerPixel: 1, pixelRepresentation: 0,
      photometricInterpretation: "MONOCHROME2",
    },
    instance: {
      SOPInstanceUID: source.sopInstanceUID, SOPClassUID: source.sopClassUID,
      SeriesInstanceUID: source.seriesInstanceUID, Rows: source.rows, Columns: source.columns,
    },
  };
  return modules[type];
}
metaData.addProvider(describeSource, 10000);
const metadataProvider = { get: (type, imageId) => metaData.get(type, imageId) };

function readSeg(buffer) {
  const file = dcmjs.data.DicomMessage.readFile(buffer);
  const dataset = dcmjs.data.DicomMetaDictionary.naturalizeDataset(file.dict);
  return { file, dataset };
}

function withOrientation(buffer, orientation) {
  const { file, dataset } = readSeg(buffer);
  const shared = [].concat(dataset.SharedFunctionalGroupsSequence ?? [])[0] ?? {};
  shared.PlaneOrientationSequence = [{ ImageOrientationPatient: orientation }];
  dataset.SharedFunctionalGroupsSequence = [shared];
  file.dict = dcmjs.data.DicomMetaDictionary.denaturalizeDataset(dataset);
  return file.write();
}

function toArrayBuffer(bytes) {
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
}

async function load(request) {
  const sourceId = `source:${request.name}`;
  sources.set(sourceId, request.source);
  const bytes = fs.readFileSync(request.seg);
  const { dataset } = readSeg(toArrayBuffer(bytes));
  const result = {
    name: request.name,
    dcmjs: {
      frames: Number(dataset.NumberOfFrames),
      segments: [].concat(dataset.SegmentSequence).map((s) => s.SegmentLabel),
    },
  };
  let buffer = toArrayBuffer(bytes);
  if (request.assumeOrientation) buffer = withOrientation(buffer, request.assumeOrientation);
  try {
    const loaded = await adaptersSEG.Cornerstone3D.Segmentation.createFromDICOMSegBuffer(
      [sourceId], buffer, { metadataProvider });
    const labelmaps = [];
    for (const [index, images] of loaded.labelMapImages.entries()) {
      const image = images[0];
      const data = image.voxelManager
        ? image.voxelManager.getScalarData() : image.getPixelData();
      const file = path.join(request.out, `labelmap_${index}.u8`);
      fs.writeFileSync(file, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
      labelmaps.push({ file, bytesPerPixel: data.BYTES_PER_ELEMENT });
    }
    result.adapters = {
      labelmaps,
      segments: Object.keys(loaded.segMetadata.data).filter((k) => loaded.segMetadata.data[k]),
    };
  } catch (error) {
    result.adapters = { error: `${error.name}: ${error.message}` };
  }
  return result;
}

async function main() {
  for (const request of requests) {
    process.stdout.write(`${JSON.stringify(await load(request))}\n`);
  }
}

main().catch((error) => {
  process.stderr.write(`${error.stack}\n`);
  process.exit(1);
});
