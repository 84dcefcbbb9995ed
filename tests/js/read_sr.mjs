// Read TID 1500 SRs the way OHIF 3's SR handler does (extensions/cornerstone-dicom-sr
// getSopClassHandlerModule: _getReferencedImagesList), with dcmjs, headless and without
// the guards OHIF leaves out: ImageLibrary.ContentSequence is read unconditionally.
//
//   node read_sr.mjs SR...
//
// Prints one JSON line per file: {file, images: [{sopClassUID, sopInstanceUID}]} or
// {file, error}.
import fs from "node:fs";
import dcmjs from "dcmjs";

const asArray = (sequence) => (Array.isArray(sequence) ? sequence : [sequence]);
const named = (items, code) =>
  asArray(items).find((item) => asArray(item.ConceptNameCodeSequence)[0].CodeValue === code);

function referencedImages(path) {
  const buffer = fs.readFileSync(path);
  const dicom = dcmjs.data.DicomMessage.readFile(buffer.buffer.slice(buffer.byteOffset));
  const dataset = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dicom.dict);
  const imageLibrary = named(dataset.ContentSequence, "111028"); // Image Library
  const group = named(imageLibrary.ContentSequence, "126200"); // Image Library Group
  const images = [];
  for (const item of asArray(group.ContentSequence)) {
    if (!item.ReferencedSOPSequence) continue;
    for (const ref of asArray(item.ReferencedSOPSequence)) {
      images.push({ sopClassUID: ref.ReferencedSOPClassUID,
                    sopInstanceUID: ref.ReferencedSOPInstanceUID });
    }
  }
  return images;
}

for (const file of process.argv.slice(2)) {
  try {
    console.log(JSON.stringify({ file, images: referencedImages(file) }));
  } catch (error) {
    console.log(JSON.stringify({ file, error: `${error.name}: ${error.message}` }));
  }
}
