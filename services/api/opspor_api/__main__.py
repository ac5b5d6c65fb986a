from opspor_api.main import main

main()
