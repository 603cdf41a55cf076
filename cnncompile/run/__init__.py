"""Running a spec: train.py fills a run directory (rundir.py), checkpoint.py makes every epoch
resumable, distributed.py spreads a run over processes, tune.py searches (study.py keeps the
Optuna study and its trials' liveness, study_files.py its outputs), report.py writes report.html.
"""
