"""The SlideSAM panel of the web page (vuetify 3 widgets): prompts, propagate, progress, restart, refine, undo, save.

Every control has an `id` so a browser test (Testing/web) finds it as a user would, by what it shows.
"""
from trame.widgets import html
from trame.widgets import vuetify3 as v3

DIRECTIONS = [("both", "both ways"), ("up", "up (higher slice index)"), ("down", "down (lower slice index)")]
# What a run reads from the fields, sent with the run button's click itself (trame: trigger(name, [args])).  The page
# pushes a typed value to the server only once its earlier pushes are answered, while a click goes at once: a run that
# read the server's state after "type the range, click" could use the range from before the last keystroke
# (Testing/web/test_web_typed_range.py).  SlideSAMWebLogic.propagate / restart / refine take these in this order.
RANGE_FIELDS = "slidesam_range_on, slidesam_range_from, slidesam_range_to"
RUN_FIELDS = f"[{RANGE_FIELDS}, slidesam_direction]"  # Propagate, Restart
REFINE_FIELDS = f"[{RANGE_FIELDS}]"  # Refine (one slice: no direction)


def _button(text, click, element_id, icon=None, **kwargs):
    return v3.VBtn(text, click=click, id=element_id, prepend_icon=icon, size="small", classes="ma-1", **kwargs)


def _download(server, suffix, callback):
    """A click that asks the server for the file's bytes and hands them to the browser as a download."""
    return f"utils.download(slidesam_basename + '{suffix}', trigger('{server.controller.trigger_name(callback)}'), 'application/octet-stream')"


def build_panel(server, ctrl):
    """The panel's widgets; `ctrl` is the SlideSAMWebLogic whose methods the controls call."""
    with v3.VCard(id="slidesam-panel", classes="ma-2", variant="outlined"):
        v3.VCardTitle("SlideSAM")
        with v3.VCardText():
            html.Div("{{ slidesam_engine }}", id="slidesam-engine", classes="text-caption mb-2")
            html.Div("Prompt on one slice view:", classes="text-caption")
            with html.Div(classes="d-flex flex-wrap"):
                _button("Box", ctrl.place_box, "slidesam-box", "mdi-vector-square", disabled=("slidesam_busy",))
                _button("Include", ctrl.place_include, "slidesam-include", "mdi-plus-circle", disabled=("slidesam_busy",))
                _button("Exclude", ctrl.place_exclude, "slidesam-exclude", "mdi-minus-circle", disabled=("slidesam_busy",))
                _button("Clear", ctrl.clear_prompts, "slidesam-clear", "mdi-close", disabled=("slidesam_busy",))
            html.Div(
                "box {{ slidesam_prompt.box_mm[0] ? slidesam_prompt.box_mm.join(' x ') + ' mm' : 'not placed' }}, "
                "{{ slidesam_prompt.include }} include, {{ slidesam_prompt.exclude }} exclude",
                id="slidesam-prompt", classes="text-caption",
            )
            html.Pre("{{ JSON.stringify(slidesam_prompt) }}", id="slidesam-prompt-json", style="display: none;")
            v3.VSelect(
                v_model=("slidesam_direction", "both"),
                items=("slidesam_directions", [{"value": k, "title": t} for k, t in DIRECTIONS]),
                label="Direction",
                density="compact",
                hide_details=True,
                id="slidesam-direction",
                classes="my-2",
            )
            html.Div(
                "{{ ['Red', 'Yellow', 'Green'].filter(v => slidesam_views[v] && slidesam_views[v].axis !== null && slidesam_views[v].axis !== undefined)"
                ".map(v => v + ': ' + 'IJK'[slidesam_views[v].axis] + ' ' + slidesam_views[v].index).join(', ') }}",
                id="slidesam-slices", classes="text-caption",
            )
            with html.Div(classes="d-flex align-center"):
                v3.VCheckbox(v_model=("slidesam_range_on", False), label="Only slices", density="compact", hide_details=True,
                             id="slidesam-range-on", disabled=("slidesam_busy",))
                for end, label in (("from", "from"), ("to", "to")):
                    v3.VTextField(v_model=(f"slidesam_range_{end}", ""), label=label, type="number", density="compact", hide_details=True,
                                  id=f"slidesam-range-{end}", disabled=("slidesam_busy || !slidesam_range_on",), classes="mx-1", style="max-width: 90px;")
            html.Div("into segment: {{ slidesam_segment || 'a new one (SlideSAM)' }}", id="slidesam-segment", classes="text-caption")
            with html.Div(classes="d-flex flex-wrap"):
                _button("Propagate", (ctrl.propagate, RUN_FIELDS), "slidesam-propagate", "mdi-play", color="primary", disabled=("slidesam_busy",))
                _button("Cancel", ctrl.cancel, "slidesam-cancel", "mdi-stop", disabled=("!slidesam_busy",))
                _button("Restart from this slice", (ctrl.restart, RUN_FIELDS), "slidesam-restart", "mdi-restart", disabled=("slidesam_busy",))
                _button("Refine with points", (ctrl.refine, REFINE_FIELDS), "slidesam-refine", "mdi-auto-fix", disabled=("slidesam_busy",))
                _button("Undo", ctrl.undo, "slidesam-undo", "mdi-undo", disabled=("slidesam_busy || !slidesam_can_undo",))
            v3.VProgressLinear(model_value=("slidesam_progress", 0), height=6, classes="my-2", id="slidesam-progress", color="primary")
            html.Div("{{ slidesam_message }}", id="slidesam-message", classes="text-caption")
            html.Div("{{ slidesam_error }}", id="slidesam-error", classes="text-caption text-error")
            with html.Div(classes="d-flex flex-wrap mt-2"):
                _button(".seg.nrrd", _download(server, ".seg.nrrd", ctrl.save_seg_nrrd), "slidesam-save-seg", "mdi-download")
                _button("NIfTI", _download(server, ".nii.gz", ctrl.save_nifti), "slidesam-save-nifti", "mdi-download")
            # Where each slice view shows what (the browser test maps voxels to page pixels with it).
            html.Pre("{{ JSON.stringify(slidesam_views) }}", id="slidesam-views", style="display: none;")
            html.Pre("{{ JSON.stringify(slidesam_last) }}", id="slidesam-last", style="display: none;")
            html.Pre("{{ JSON.stringify(slidesam_range_seen) }}", id="slidesam-range-seen", style="display: none;")
            html.Pre("{{ JSON.stringify(slidesam_volume) }}", id="slidesam-volume", style="display: none;")
