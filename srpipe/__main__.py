from .cli import main

if __name__ == "__main__":  # guarded: benchmark workers re-import this module
    main()
