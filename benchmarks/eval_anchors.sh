#!/bin/sh
# `slidesam eval` with its chain / oracle anchors on every evaluation-only volume, then on every structure of the
# training folders (benchmarks/RESULTS_anchors.md).  Usage: benchmarks/eval_anchors.sh OUT [extra eval options]
# Run from the repository root; the data is ../shared/data.  One box, one click, no jitter, no correction loop.
set -e
OUT=${1:?output folder}; shift
D=../shared/data
PY=${PYTHON:-python}
$PY -m SlideSAMLib.cli eval \
  --case $D/ct_dicom/dicom $D/ct_dicom/seg_on_dicom_grid.nii.gz $D/ct_dicom/labels_total.json \
  --case $D/ct_liver_3slice/dicom $D/ct_liver_3slice/liver_spine_seg.nrrd $D/ct_liver_3slice/labels.json \
  --case $D/ct_liver_3slice/dicom $D/ct_liver_3slice/heart_seg.nrrd $D/ct_liver_3slice/labels.json \
  --case $D/mr_brain_tumour/brain1_image.nrrd $D/mr_brain_tumour/brain1_label.nrrd \
  --case $D/mr_brain_tumour2/image.nrrd $D/mr_brain_tumour2/label.nrrd \
  --case $D/mr_spinal_cord/t1_image.nii.gz $D/mr_spinal_cord/t1_label_cord.nii.gz \
  --case $D/mr_spinal_cord/t2_image.nii.gz $D/mr_spinal_cord/t2_label_cord.nii.gz \
  --case $D/mr_spinal_cord/t2s_image.nii.gz $D/mr_spinal_cord/t2s_label_graymatter.nii.gz \
  --jitter 0 --no-efficiency --no-figures "$@" -o "$OUT/evaluation_only"
$PY -m SlideSAMLib.cli eval \
  --case $D/ct_chest_nodule/image.nrrd $D/ct_chest_nodule/label.nrrd \
  --case $D/mr_breast_lesion/image.nrrd $D/mr_breast_lesion/label.nrrd \
  --case $D/ct_liver_lits/image.nii.gz $D/ct_liver_lits/label.nii.gz \
  --case $D/ct_mr_spine/sub-ct_label-22_ct.nii.gz $D/ct_mr_spine/sub-ct_seg-vert_label-22_msk.nii.gz \
  --case $D/ct_mr_spine/sub-ct_label-22_ct.nii.gz $D/ct_mr_spine/sub-ct_seg-subreg_label-22_msk.nii.gz \
  --case $D/ct_mr_spine/sub-mri_label-6_T2w.nii.gz $D/ct_mr_spine/sub-mri_seg-vert_label-6_msk.nii.gz \
  --case $D/ct_mr_spine/sub-mri_label-6_T2w.nii.gz $D/ct_mr_spine/sub-mri_seg-subreg_label-6_msk.nii.gz \
  --case $D/mr_abdomen/example_mr_sm.nii.gz $D/mr_abdomen/example_seg_mr.nii.gz $D/mr_abdomen/labels_total_mr.json \
  --case $D/ct_abdomen/example_ct.nii.gz $D/ct_abdomen/example_seg_fast_force_split.nii.gz $D/ct_abdomen/labels_total.json \
  --jitter 0 --no-efficiency --no-figures "$@" -o "$OUT/training"
