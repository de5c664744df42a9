"""`slidesam eval`: simulated prompts on labelled volumes, 3D metrics, labelling-efficiency simulation.

metrics.py   3D Dice; surface Dice at a tolerance and HD95 (MONAI, physical distances; the `eval` extra)
evaluate.py  the prompt simulation and the correction loop
anchors.py   the chain and oracle anchors (same predictor)
protocol.py  the CVPR 2025 interactive protocol (a box, then refinement clicks via Session.refine)
report.py    JSON, Markdown table, PNG figures
cli.py       the `eval` sub-command
"""
