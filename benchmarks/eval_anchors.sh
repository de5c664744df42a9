#!/bin/sh
# `slidesam eval` with its chain / oracle anchors on every evaluation-only volume and on every structure of the
# training folders, one eval per folder (benchmarks/RESULTS_anchors.md).  From the repository root, data in
# ../shared/data:   benchmarks/eval_anchors.sh OUT evaluation_only|training|training_main [extra eval options]
# training_main: the training folders' main structures only (the 17 example_ct ones of RESULTS.md §1c, the
# vertebrae of ct_mr_spine) — for a machine too loaded for every structure.
# One box and one click per structure; no jitter, no correction loop, no figures. Each eval rewrites its eval.json
# after every structure ("complete": false until it ends), so a stopped run keeps what it finished.
set -e
OUT=${1:?output folder}; PART=${2:?evaluation_only or training}; shift 2
D=../shared/data
PY=${PYTHON:-python}
ev() { name=$1; shift; $PY -m SlideSAMLib.cli eval "$@" --jitter 0 --no-efficiency --no-figures $EXTRA -o "$OUT/$name"; }
EXTRA="$*"
if [ "$PART" = evaluation_only ]; then
  ev ct_liver_3slice --case $D/ct_liver_3slice/dicom $D/ct_liver_3slice/liver_spine_seg.nrrd $D/ct_liver_3slice/labels.json \
                     --case $D/ct_liver_3slice/dicom $D/ct_liver_3slice/heart_seg.nrrd $D/ct_liver_3slice/labels.json
  ev mr_brain_tumour --case $D/mr_brain_tumour/brain1_image.nrrd $D/mr_brain_tumour/brain1_label.nrrd \
                     --case $D/mr_brain_tumour2/image.nrrd $D/mr_brain_tumour2/label.nrrd
  ev mr_spinal_cord --case $D/mr_spinal_cord/t1_image.nii.gz $D/mr_spinal_cord/t1_label_cord.nii.gz \
                    --case $D/mr_spinal_cord/t2_image.nii.gz $D/mr_spinal_cord/t2_label_cord.nii.gz \
                    --case $D/mr_spinal_cord/t2s_image.nii.gz $D/mr_spinal_cord/t2s_label_graymatter.nii.gz
  ev ct_dicom --case $D/ct_dicom/dicom $D/ct_dicom/seg_on_dicom_grid.nii.gz $D/ct_dicom/labels_total.json
elif [ "$PART" = training_main ]; then
  ev lesions --case $D/ct_chest_nodule/image.nrrd $D/ct_chest_nodule/label.nrrd \
             --case $D/mr_breast_lesion/image.nrrd $D/mr_breast_lesion/label.nrrd
  ev ct_mr_spine_vert --case $D/ct_mr_spine/sub-ct_label-22_ct.nii.gz $D/ct_mr_spine/sub-ct_seg-vert_label-22_msk.nii.gz \
                      --case $D/ct_mr_spine/sub-mri_label-6_T2w.nii.gz $D/ct_mr_spine/sub-mri_seg-vert_label-6_msk.nii.gz \
                      --structures 5,6,7,21,22,23
  ev mr_abdomen --case $D/mr_abdomen/example_mr_sm.nii.gz $D/mr_abdomen/example_seg_mr.nii.gz $D/mr_abdomen/labels_total_mr.json
  ev ct_liver_lits --case $D/ct_liver_lits/image.nii.gz $D/ct_liver_lits/label.nii.gz
  ev ct_abdomen_main --case $D/ct_abdomen/example_ct.nii.gz $D/ct_abdomen/example_seg_fast_force_split.nii.gz $D/ct_abdomen/labels_total.json \
    --structures spleen,kidney_right,kidney_left,liver,gallbladder,stomach,pancreas,aorta,inferior_vena_cava,urinary_bladder,vertebrae_L3,duodenum,iliopsoas_left,femur_left,autochthon_left,portal_vein_and_splenic_vein
else
  ev lesions --case $D/ct_chest_nodule/image.nrrd $D/ct_chest_nodule/label.nrrd \
             --case $D/mr_breast_lesion/image.nrrd $D/mr_breast_lesion/label.nrrd
  ev mr_abdomen --case $D/mr_abdomen/example_mr_sm.nii.gz $D/mr_abdomen/example_seg_mr.nii.gz $D/mr_abdomen/labels_total_mr.json
  ev ct_mr_spine --case $D/ct_mr_spine/sub-ct_label-22_ct.nii.gz $D/ct_mr_spine/sub-ct_seg-vert_label-22_msk.nii.gz \
                 --case $D/ct_mr_spine/sub-ct_label-22_ct.nii.gz $D/ct_mr_spine/sub-ct_seg-subreg_label-22_msk.nii.gz \
                 --case $D/ct_mr_spine/sub-mri_label-6_T2w.nii.gz $D/ct_mr_spine/sub-mri_seg-vert_label-6_msk.nii.gz \
                 --case $D/ct_mr_spine/sub-mri_label-6_T2w.nii.gz $D/ct_mr_spine/sub-mri_seg-subreg_label-6_msk.nii.gz
  ev ct_liver_lits --case $D/ct_liver_lits/image.nii.gz $D/ct_liver_lits/label.nii.gz
  ev ct_abdomen --case $D/ct_abdomen/example_ct.nii.gz $D/ct_abdomen/example_seg_fast_force_split.nii.gz $D/ct_abdomen/labels_total.json
fi
