"""The `southrock` command line and token administration, for Training Coordinators, Managers and operators."""
