from services.generator.main import main

# The guard matters: the vLLM engine spawns its worker process, which re-imports the entry module.
if __name__ == "__main__":
    main()
