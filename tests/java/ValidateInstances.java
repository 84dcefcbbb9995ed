// PixelMed's DicomInstanceValidator on several files in one JVM (its main() takes one
// file, and compiling its rules costs seconds per start). Run as a single-file program:
//   java -cp pixelmed.jar:commons-codec.jar ValidateInstances.java FILE...
// Prints "=== FILE" before each file's report.
import com.pixelmed.dicom.AttributeList;
import com.pixelmed.validate.DicomInstanceValidator;

public class ValidateInstances {
    public static void main(String[] args) throws Exception {
        DicomInstanceValidator validator = new DicomInstanceValidator();
        for (String path : args) {
            AttributeList list = new AttributeList();
            list.read(path);
            System.out.println("=== " + path);
            System.out.println(validator.validate(list));
        }
    }
}
