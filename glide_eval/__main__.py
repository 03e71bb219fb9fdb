from glide_eval.cli import main
from glide_eval.sweep.launcher import exit_with_launcher

exit_with_launcher()  # a torchrun worker ends with torchrun (before the commands import torch)
main(prog_name="glide-eval")
