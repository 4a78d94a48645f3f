"""The dataset before any work: checks of every case, patient-grouped folds, case selection."""
