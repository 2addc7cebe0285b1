from services.projects.app import main

main()
