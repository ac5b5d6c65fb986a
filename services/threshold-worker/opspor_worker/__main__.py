from opspor_worker.main import main

main()
