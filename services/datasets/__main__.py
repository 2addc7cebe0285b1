from services.datasets.app import main

main()
