from glide_eval.cli import main

main(prog_name="glide-eval")
