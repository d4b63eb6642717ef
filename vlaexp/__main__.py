from vlaexp.app import main

main()
