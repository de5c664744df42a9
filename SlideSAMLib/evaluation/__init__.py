"""`slidesam eval`: simulated prompts on labelled volumes, 3D metrics, labelling-efficiency simulation.

metrics.py   3D Dice, surface Dice at a tolerance, HD95 (SimpleITK distance maps, voxel spacing)
evaluate.py  the prompt simulation and the correction loop
report.py    JSON, Markdown table, PNG figures
cli.py       the `eval` sub-command
"""
